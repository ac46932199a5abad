//! Writing a dataset into a folder. A folder that already holds files is
//! refused unless the caller asks to replace it; a replacement is complete:
//! everything is written into a hidden sibling (`.NAME.tmp`) and swapped in by
//! renames only once it is whole, so the target never holds a mix of an old
//! and a new dataset (a re-run would otherwise leave the first run's shards
//! beside the new ones, and a split would hold stale images, some twice).
//!
//! The swap is two renames (`NAME` → `.NAME.old`, `.NAME.tmp` → `NAME`), then
//! the old folder is removed. A crash between the renames leaves no `NAME` and
//! the previous dataset whole in `.NAME.old`; never a mixture.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A folder being written: files go to [`Staging::dir`] and appear at the
/// target only on [`Staging::commit`]. Dropped without a commit, the staged
/// files are removed and the target is left as it was.
#[derive(Debug)]
pub struct Staging {
    target: PathBuf,
    tmp: PathBuf,
    old: PathBuf,
    committed: bool,
}

/// The first entry of `dir` (sorted), if it exists and is not empty.
pub fn first_entry(dir: &Path) -> Result<Option<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        names.push(
            entry
                .map_err(|e| Error::io(dir, e))?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names.into_iter().next())
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir, e)),
        _ => Ok(()),
    }
}

impl Staging {
    /// Start writing the folder `target`. Errors: `target` is a file, or holds
    /// anything and `overwrite` is false (the message names an entry and says
    /// to pass `--overwrite` or choose another folder).
    pub fn begin(target: &Path, overwrite: bool) -> Result<Self> {
        let name = target
            .file_name()
            .filter(|n| *n != "." && *n != "..")
            .ok_or_else(|| Error::InvalidInput {
                path: target.into(),
                what: "name the output folder itself (not `.` or `..`)".into(),
            })?
            .to_string_lossy()
            .into_owned();
        if target.exists() && !target.is_dir() {
            return Err(Error::InvalidInput {
                path: target.into(),
                what: "is a file; the output must be a folder".into(),
            });
        }
        if let Some(entry) = first_entry(target)? {
            if !overwrite {
                return Err(Error::InvalidInput {
                    path: target.into(),
                    what: format!(
                        "already holds files (`{entry}`, ...); pass --overwrite to replace the \
                         whole folder, or choose an empty or new one"
                    ),
                });
            }
        }
        let parent = target.parent().unwrap_or(Path::new(""));
        let tmp = parent.join(format!(".{name}.tmp"));
        let old = parent.join(format!(".{name}.old"));
        // Left by a run that stopped: never part of any dataset.
        remove_dir(&tmp)?;
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(Self {
            target: target.into(),
            tmp,
            old,
            committed: false,
        })
    }

    /// Where to write: the hidden sibling folder.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// `path` under [`Staging::dir`] as it will be named under the target.
    pub fn final_path(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.tmp) {
            Ok(rel) => self.target.join(rel),
            Err(_) => path.to_path_buf(),
        }
    }

    /// Swap the staged folder in for the target and remove the old one.
    pub fn commit(mut self) -> Result<()> {
        remove_dir(&self.old)?;
        if self.target.exists() {
            std::fs::rename(&self.target, &self.old).map_err(|e| Error::io(&self.target, e))?;
        }
        std::fs::rename(&self.tmp, &self.target).map_err(|e| Error::io(&self.target, e))?;
        self.committed = true;
        remove_dir(&self.old)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_non_empty_target_and_replaces_it_whole() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        std::fs::create_dir_all(target.join("train")).unwrap();
        std::fs::write(target.join("train/old-00000.parquet"), b"old").unwrap();
        let err = Staging::begin(&target, false).unwrap_err().to_string();
        assert!(
            err.contains("--overwrite") && err.contains("train"),
            "{err}"
        );

        // Dropped without commit: target untouched, nothing staged left.
        let s = Staging::begin(&target, true).unwrap();
        std::fs::write(s.dir().join("new.parquet"), b"new").unwrap();
        drop(s);
        assert!(target.join("train/old-00000.parquet").is_file());
        assert!(!root.path().join(".out.tmp").exists());

        let s = Staging::begin(&target, true).unwrap();
        std::fs::create_dir_all(s.dir().join("val")).unwrap();
        std::fs::write(s.dir().join("val/new.parquet"), b"new").unwrap();
        assert_eq!(
            s.final_path(&s.dir().join("val/new.parquet")),
            target.join("val/new.parquet")
        );
        s.commit().unwrap();
        assert!(!target.join("train").exists());
        assert!(target.join("val/new.parquet").is_file());
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["out"]);
        // An empty folder is fine without --overwrite.
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        Staging::begin(&empty, false).unwrap().commit().unwrap();
        assert!(empty.is_dir());
    }
}
