//! Model configs in settings files may be the path of the JSON file a stage
//! writes (`clip_config.json`, `captioner.json`), besides a preset name or a
//! table of fields; a path that cannot be read or parsed is an error that
//! names the file and what was expected.
use dicoflow::model::captioner::CaptionerConfig;
use dicoflow::model::clip::ClipConfig;
use dicoflow::train::stages::CaptionStageSettings;

#[derive(Debug, serde::Deserialize)]
struct Clip {
    config: ClipConfig,
}

#[derive(Debug, serde::Deserialize)]
struct Captioner {
    config: CaptionerConfig,
}

fn clip_from(spec: &str) -> Result<ClipConfig, String> {
    toml::from_str::<Clip>(&format!("config = {}", toml::Value::String(spec.into())))
        .map(|c| c.config)
        .map_err(|e| e.to_string())
}

fn small_clip() -> ClipConfig {
    let mut cfg = ClipConfig::preset("tiny").unwrap();
    cfg.embed_dim = 48;
    cfg.vision.patch_size = 8;
    cfg
}

#[test]
fn clip_config_by_path_reads_the_file_a_stage_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("clip_config.json");
    let cfg = small_clip();
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    assert_eq!(clip_from(path.to_str().unwrap()).unwrap(), cfg);
    // Presets still win over files.
    assert_eq!(
        clip_from("ViT-B-32").unwrap(),
        ClipConfig::preset("ViT-B-32").unwrap()
    );
}

#[test]
fn captioner_config_by_path_inside_stage_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cap = CaptionerConfig::preset("tiny").unwrap();
    cap.max_len = 17;
    let clip = small_clip();
    std::fs::write(
        dir.join("captioner.json"),
        serde_json::to_string(&cap).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("clip_config.json"),
        serde_json::to_string(&clip).unwrap(),
    )
    .unwrap();
    let text = format!(
        "captioner = {:?}\nweights = \"m.safetensors\"\nbackbone = \"b.safetensors\"\n\
         backbone_config = {:?}\nout = \"c.jsonl\"\n",
        dir.join("captioner.json").display().to_string(),
        dir.join("clip_config.json").display().to_string(),
    );
    let s: CaptionStageSettings = toml::from_str(&text).unwrap();
    assert_eq!(s.captioner, cap);
    assert_eq!(s.backbone_config, clip);
    let c: Captioner = toml::from_str(&format!(
        "config = {:?}",
        dir.join("captioner.json").display().to_string()
    ))
    .unwrap();
    assert_eq!(c.config, cap);
}

#[test]
fn missing_file_is_an_error_naming_it_and_the_choices() {
    let err = clip_from("runs/nowhere/clip_config.json").unwrap_err();
    assert!(err.contains("runs/nowhere/clip_config.json"), "{err}");
    assert!(err.contains("ViT-B-32"), "{err}");
    assert!(err.contains("JSON file"), "{err}");
}

#[test]
fn unparsable_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("clip_config.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let err = clip_from(bad.to_str().unwrap()).unwrap_err();
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
    assert!(err.contains("not JSON"), "{err}");

    // Valid JSON, but not a CLIP config (a captioner's file in its place).
    let cap = tmp.path().join("captioner.json");
    let cfg = CaptionerConfig::preset("tiny").unwrap();
    std::fs::write(&cap, serde_json::to_string(&cfg).unwrap()).unwrap();
    let err = clip_from(cap.to_str().unwrap()).unwrap_err();
    assert!(err.contains(cap.to_str().unwrap()), "{err}");
    assert!(err.contains("not a CLIP config"), "{err}");

    let list = tmp.path().join("list.json");
    std::fs::write(&list, "[1, 2]").unwrap();
    let err = clip_from(list.to_str().unwrap()).unwrap_err();
    assert!(err.contains("JSON object"), "{err}");
}
