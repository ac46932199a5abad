//! Writing shards in dicoflow's layout: `key: string`,
//! `image: struct<bytes: binary, path: string>` (the Hugging Face image layout),
//! `captions: list<string>`, plus optional extra string columns (the synthetic
//! world stores each scene as JSON). Each shard is written to a temporary name
//! and renamed when complete, so a crash never leaves a half shard that looks whole.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, ListBuilder, StringArray, StringBuilder, StructArray};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

/// Default rows per shard file.
pub const DEFAULT_ROWS_PER_SHARD: usize = 5_000;
/// Default rows per row group: the unit of shuffling, worker assignment and reading.
pub const DEFAULT_ROWS_PER_ROW_GROUP: usize = 128;
/// Default zstd level (images are already compressed; this mostly packs text).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// One row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardRow {
    pub key: String,
    pub image: Vec<u8>,
    pub image_path: Option<String>,
    pub captions: Vec<String>,
    /// Values of the writer's extra columns, in their order.
    pub extra: Vec<String>,
}

/// Shard writer settings.
#[derive(Debug, Clone)]
pub struct ShardWriterConfig {
    pub rows_per_shard: usize,
    pub rows_per_row_group: usize,
    pub zstd_level: i32,
    /// Names of extra string columns after `captions`.
    pub extra_columns: Vec<String>,
    /// Key/value pairs stored in every file's metadata.
    pub metadata: Vec<(String, String)>,
}

impl Default for ShardWriterConfig {
    fn default() -> Self {
        Self {
            rows_per_shard: DEFAULT_ROWS_PER_SHARD,
            rows_per_row_group: DEFAULT_ROWS_PER_ROW_GROUP,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            extra_columns: Vec::new(),
            metadata: Vec::new(),
        }
    }
}

struct OpenShard {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    rows: usize,
}

/// Writes rows to `DIR/PREFIX-00000.parquet`, `DIR/PREFIX-00001.parquet`, ...
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    cfg: ShardWriterConfig,
    schema: SchemaRef,
    props: WriterProperties,
    pending: Vec<ShardRow>,
    open: Option<OpenShard>,
    next_shard: usize,
    written: Vec<PathBuf>,
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("dir", &self.dir)
            .field("prefix", &self.prefix)
            .field("written", &self.written)
            .finish()
    }
}

/// The Arrow schema of dicoflow shards with the given extra string columns.
pub fn shard_schema(extra_columns: &[String]) -> SchemaRef {
    let mut fields = vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("image", DataType::Struct(image_fields()), true),
        Field::new(
            "captions",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ];
    for name in extra_columns {
        fields.push(Field::new(name, DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

fn image_fields() -> Fields {
    Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ])
}

impl ShardWriter {
    /// A writer into `dir` (created if missing) naming files `prefix-NNNNN.parquet`.
    pub fn try_new(dir: &Path, prefix: &str, cfg: ShardWriterConfig) -> Result<Self> {
        if cfg.rows_per_shard == 0 || cfg.rows_per_row_group == 0 {
            return Err(Error::Config {
                name: "rows_per_shard / rows_per_row_group",
                what: "must be at least 1".into(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let level = ZstdLevel::try_new(cfg.zstd_level).map_err(|e| Error::Config {
            name: "zstd_level",
            what: e.to_string(),
        })?;
        let kv: Vec<KeyValue> = cfg
            .metadata
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(cfg.rows_per_row_group))
            .set_key_value_metadata((!kv.is_empty()).then_some(kv))
            .build();
        Ok(Self {
            dir: dir.to_path_buf(),
            prefix: prefix.to_owned(),
            schema: shard_schema(&cfg.extra_columns),
            cfg,
            props,
            pending: Vec::new(),
            open: None,
            next_shard: 0,
            written: Vec::new(),
        })
    }

    /// Add one row.
    pub fn push(&mut self, row: ShardRow) -> Result<()> {
        if row.extra.len() != self.cfg.extra_columns.len() {
            return Err(Error::Config {
                name: "extra_columns",
                what: format!(
                    "row `{}` has {} extra values, the writer has {} extra columns",
                    row.key,
                    row.extra.len(),
                    self.cfg.extra_columns.len()
                ),
            });
        }
        self.pending.push(row);
        let rows_in_shard = self.open.as_ref().map_or(0, |o| o.rows);
        if self.pending.len() >= self.cfg.rows_per_row_group
            || rows_in_shard + self.pending.len() >= self.cfg.rows_per_shard
        {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let batch = self.to_batch(&rows)?;
        if self.open.is_none() {
            let path = self
                .dir
                .join(format!("{}-{:05}.parquet", self.prefix, self.next_shard));
            let tmp = path.with_extension("parquet.tmp");
            self.next_shard += 1;
            let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
                .map_err(|source| Error::ParquetWrite {
                    path: tmp.clone(),
                    source,
                })?;
            self.open = Some(OpenShard {
                writer,
                tmp,
                path,
                rows: 0,
            });
        }
        let open = self.open.as_mut().expect("opened above");
        let werr = |source| Error::ParquetWrite {
            path: open.tmp.clone(),
            source,
        };
        open.writer.write(&batch).map_err(werr)?;
        open.writer.flush().map_err(werr)?;
        open.rows += rows.len();
        if open.rows >= self.cfg.rows_per_shard {
            self.close_shard()?;
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some(open) = self.open.take() {
            open.writer.close().map_err(|source| Error::ParquetWrite {
                path: open.tmp.clone(),
                source,
            })?;
            std::fs::rename(&open.tmp, &open.path).map_err(|e| Error::io(&open.path, e))?;
            self.written.push(open.path);
        }
        Ok(())
    }

    fn to_batch(&self, rows: &[ShardRow]) -> Result<RecordBatch> {
        let keys = StringArray::from_iter_values(rows.iter().map(|r| r.key.as_str()));
        let bytes = BinaryArray::from_iter_values(rows.iter().map(|r| r.image.as_slice()));
        let paths: StringArray = rows.iter().map(|r| r.image_path.as_deref()).collect();
        let image = StructArray::new(
            image_fields(),
            vec![Arc::new(bytes) as ArrayRef, Arc::new(paths) as ArrayRef],
            None,
        );
        let mut captions = ListBuilder::new(StringBuilder::new());
        for r in rows {
            for c in &r.captions {
                captions.values().append_value(c);
            }
            captions.append(true);
        }
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(keys), Arc::new(image), Arc::new(captions.finish())];
        for i in 0..self.cfg.extra_columns.len() {
            columns.push(Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.extra[i].as_str()),
            )));
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| Error::ParquetWrite {
            path: self.dir.clone(),
            source: e.into(),
        })
    }

    /// Write what is pending, close the last shard, and return all shard paths.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.write_pending()?;
        self.close_shard()?;
        Ok(std::mem::take(&mut self.written))
    }
}
