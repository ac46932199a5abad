//! Every pipeline file shipped under `pipelines/` parses and names only stage
//! types that `dicoflow train` knows, with settings those stages accept.
use std::path::Path;

use dicoflow::flow::Pipeline;

#[test]
fn shipped_pipelines_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let registry = dicoflow::train::stages::registry();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = Pipeline::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            registry
                .check(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 1, "no pipeline files found in {}", dir.display());
}
