//! The restricted reader of `torch.save` zip checkpoints (`model::pth`) against what
//! `torch.load` returns: tests/fixtures/convert/expected.safetensors, written by
//! tests/fixtures/convert/gen_convert_fixture.py next to the checkpoints.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use dicoflow::model::convert::{read_state_dict, read_torch_weights, WeightsSource};
use dicoflow::model::pickle::{read, PickleError, Value};
use dicoflow::model::pth::{self, TensorDictSource};
use dicoflow::model::ModelError;
use tch::Tensor;

/// The path the fixtures' `os.system` payload would create if it were ever run.
const EXECUTED_MARKER: &str = "/tmp/dicoflow_pickle_payload_ran";

fn fixture(name: &str) -> PathBuf {
    common::fixture("convert", name)
}

/// The tensors torch.load returns for `file`, by key.
fn expected(file: &str) -> BTreeMap<String, Tensor> {
    let prefix = format!("{file}/");
    Tensor::read_safetensors(fixture("expected.safetensors"))
        .unwrap()
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|k| (k.to_owned(), t)))
        .collect()
}

fn assert_same(file: &str, got: &[(String, Tensor)]) {
    let want = expected(file);
    assert!(!want.is_empty(), "{file}: no expected tensors");
    let mut got_keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    got_keys.sort();
    let want_keys: Vec<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(got_keys, want_keys, "{file}: keys");
    for (k, t) in got {
        let w = &want[k];
        assert_eq!(t.kind(), w.kind(), "{file}/{k}: dtype");
        assert_eq!(t.size(), w.size(), "{file}/{k}: shape");
        assert!(t.is_contiguous(), "{file}/{k}: not contiguous");
        assert!(t.equal(w), "{file}/{k}: values differ from torch.load");
    }
}

#[test]
fn reads_every_dtype_exactly() {
    let ckpt = pth::read_pth(&fixture("dtypes.pth")).unwrap();
    assert_eq!(ckpt.source, TensorDictSource::TopLevel);
    assert_same("dtypes.pth", &ckpt.tensors);
}

#[test]
fn views_and_shared_storage_read_as_torch_does() {
    let ckpt = pth::read_pth(&fixture("views.pth")).unwrap();
    assert_eq!(ckpt.source, TensorDictSource::TopLevel);
    assert_same("views.pth", &ckpt.tensors);
}

#[test]
fn pacs_shaped_checkpoint_reads_its_state_dict() {
    let w = read_state_dict(&fixture("pacs_like.pth")).unwrap();
    assert_eq!(
        w.source,
        WeightsSource::Checkpoint(TensorDictSource::Nested("state_dict".into()))
    );
    // `module.` prefixes dropped; the optimizer's tensors are not taken.
    assert_same("pacs_like.pth", &w.tensors);
}

#[test]
fn training_checkpoint_with_pickled_objects_reads_its_model() {
    let w = read_torch_weights(&fixture("train_args.pth"), None).unwrap();
    assert_eq!(
        w.source,
        WeightsSource::Checkpoint(TensorDictSource::Nested("model".into()))
    );
    assert_same("train_args.pth", &w.tensors);
}

#[test]
fn ordered_and_nested_dicts_equal_the_flat_one() {
    let flat = read_state_dict(&fixture("tiny_flat.pth")).unwrap();
    for name in ["tiny_ordered.pth", "tiny_nested.pth", "tiny_dp.pth"] {
        let other = read_state_dict(&fixture(name)).unwrap();
        assert_eq!(other.tensors.len(), flat.tensors.len(), "{name}");
        for ((ka, a), (kb, b)) in flat.tensors.iter().zip(&other.tensors) {
            assert_eq!(ka, kb, "{name}");
            assert!(a.equal(b), "{name}: {ka}");
        }
    }
}

#[test]
fn payloads_are_never_run() {
    std::fs::remove_file(EXECUTED_MARKER).ok();
    // Next to the weights: the weights are read, the payload is ignored.
    let ckpt = pth::read_pth(&fixture("payload.pth")).unwrap();
    assert_eq!(ckpt.source, TensorDictSource::Nested("state_dict".into()));
    assert_same("payload.pth", &ckpt.tensors);
    // Alone: refused, naming what it is.
    let err = pth::read_pth(&fixture("payload_only.pth")).unwrap_err();
    assert!(matches!(err, ModelError::NoTensorDict { .. }), "{err}");
    assert!(err.to_string().contains("`posix.system` object"), "{err}");
    assert!(
        !Path::new(EXECUTED_MARKER).exists(),
        "the pickle's os.system payload ran"
    );
}

#[test]
fn ambiguous_nesting_and_pickled_modules_are_refused() {
    let err = pth::read_pth(&fixture("ambiguous.pth")).unwrap_err();
    match &err {
        ModelError::AmbiguousTensorDict { keys, .. } => assert_eq!(keys, &["state_dict", "model"]),
        other => panic!("{other}"),
    }
    let err = pth::read_pth(&fixture("module_pickle.pth")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`__main__.Tiny` object") && text.contains("state_dict()"),
        "{text}"
    );
}

#[test]
fn torchscript_archives_are_told_apart() {
    assert!(pth::is_torchscript(&fixture("tiny_ts.pt")).unwrap());
    assert!(!pth::is_torchscript(&fixture("tiny_flat.pth")).unwrap());
    let err = pth::read_pth(&fixture("tiny_ts.pt")).unwrap_err();
    assert!(err.to_string().contains("TorchScript"), "{err}");
    // Auto detection reads it as TorchScript, with the same values as the state dict.
    let ts = read_torch_weights(&fixture("tiny_ts.pt"), None).unwrap();
    assert_eq!(ts.source, WeightsSource::TorchScript);
    let flat = read_state_dict(&fixture("tiny_flat.pth")).unwrap();
    for ((ka, a), (kb, b)) in ts.tensors.iter().zip(&flat.tensors) {
        assert_eq!(ka, kb);
        assert!(a.equal(b), "{ka}");
    }
}

/// Copies the zip checkpoint `src` to `dst`, replacing record contents by `edit`.
fn rewrite(src: &Path, dst: &Path, edit: impl Fn(&str, Vec<u8>) -> Vec<u8>) {
    let mut zin = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let name = f.name().unwrap().into_owned();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        zout.start_file(name.as_str(), opts).unwrap();
        zout.write_all(&edit(&name, data)).unwrap();
    }
    zout.finish().unwrap();
}

#[test]
fn out_of_bounds_and_foreign_byte_order_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A storage shorter than its record says.
    let short = dir.join("short.pth");
    rewrite(&fixture("views.pth"), &short, |name, mut data| {
        if name.contains("/data/") {
            data.truncate(data.len() / 2);
        }
        data
    });
    let err = pth::read_pth(&short).unwrap_err();
    assert!(matches!(err, ModelError::BadCheckpoint { .. }), "{err}");
    assert!(err.to_string().contains("bytes"), "{err}");
    // A big-endian file.
    let big = dir.join("big.pth");
    rewrite(&fixture("tiny_flat.pth"), &big, |name, data| {
        if name.ends_with("/byteorder") {
            b"big".to_vec()
        } else {
            data
        }
    });
    let err = pth::read_pth(&big).unwrap_err();
    assert!(err.to_string().contains("`big`-endian"), "{err}");
}

#[test]
fn pickle_reads_a_dict_with_shared_memo_containers() {
    // {'a': [1, 2], 'b': <the same list>}, the list filled after it was memoised
    // (pickle.dumps(..., protocol=2) of `l = [1, 2]; {'a': l, 'b': l}`).
    let data =
        b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01K\x02eX\x01\x00\x00\x00bq\x03h\x02u.";
    let v = read(data).unwrap();
    let Value::Dict(d) = v else { panic!("{v:?}") };
    let d = d.borrow();
    assert_eq!(d.len(), 2);
    for (_, list) in d.iter() {
        let Value::List(l) = list else { panic!() };
        let ints: Vec<i64> = l.borrow().iter().map(|x| x.as_int().unwrap()).collect();
        assert_eq!(ints, [1, 2]);
    }
}

#[test]
fn pickle_records_calls_instead_of_making_them() {
    // pickle.dumps of an object whose __reduce__ is (os.system, ('echo hi',)), protocol 2.
    let data = b"\x80\x02cposix\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
    let v = read(data).unwrap();
    let Value::Object(o) = v else { panic!("{v:?}") };
    let o = o.borrow();
    assert_eq!(o.callable_name().as_deref(), Some("posix.system"));
    assert_eq!(o.arg_slice()[0].as_str(), Some("echo hi"));
}

#[test]
fn pickle_long1_is_twos_complement() {
    // LONG1 of -1 (one byte 0xff) and of 2**63 (nine bytes).
    let v = read(b"\x80\x02\x8a\x01\xff.").unwrap();
    assert_eq!(v.as_int(), Some(-1));
    let v = read(b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00.").unwrap();
    assert!(matches!(v, Value::BigInt(b) if b.len() == 9));
}

#[test]
fn pickle_refuses_truncated_and_unknown_programs() {
    assert!(matches!(
        read(b"\x80\x02X\xff\x00\x00\x00ab"),
        Err(PickleError::Truncated { .. })
    ));
    assert!(matches!(
        read(b"\x80\x02\xa0."),
        Err(PickleError::UnsupportedOpcode { opcode: 0xa0, .. })
    ));
    assert!(matches!(
        read(b"\x80\x02u."),
        Err(PickleError::Malformed { .. })
    ));
}
