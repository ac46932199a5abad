//! Device settings: one type parsed from pipeline files and the command line; asking for
//! CUDA where there is none is refused at start, never run on the CPU. The refusals are
//! checked where no CUDA device is visible (CI, CPU machines); on a GPU machine the same
//! settings must resolve to the GPU.

mod common;

use std::path::Path;

use dicoflow::device::{visible_cuda_devices, DeviceError, DeviceName};
use dicoflow::flow::builtin::{ImageStats, ImageStatsConfig};
use dicoflow::flow::{run, FlowError, Pipeline, RunOptions};
use serde::{Deserialize, Serialize};

const NO_CUDA: &str =
    "no CUDA device is visible; use `cpu`, or `auto` to take the GPU when there is one";

#[test]
fn resolution_on_this_machine() {
    let count = visible_cuda_devices();
    assert_eq!(DeviceName::Cpu.resolve(), Ok(tch::Device::Cpu));
    if count == 0 {
        assert_eq!(DeviceName::Auto.resolve(), Ok(tch::Device::Cpu));
        let err = DeviceName::Cuda(0).resolve().unwrap_err();
        assert_eq!(
            err,
            DeviceError::NoCuda {
                asked: DeviceName::Cuda(0)
            }
        );
        assert!(err.to_string().contains(NO_CUDA), "{err}");
    } else {
        assert_eq!(DeviceName::Auto.resolve(), Ok(tch::Device::Cuda(0)));
        assert_eq!(DeviceName::Cuda(0).resolve(), Ok(tch::Device::Cuda(0)));
        let err = DeviceName::Cuda(count).resolve().unwrap_err();
        assert_eq!(
            err,
            DeviceError::NoSuchCuda {
                index: count,
                count
            }
        );
    }
}

fn pipeline_text(flow_device: &str, stage_device: &str) -> String {
    format!(
        r#"
[source]
path = "no/such/shards"

[flow]
device = "{flow_device}"

[[device]]
type = "image_stats"
[device.settings]
device = "{stage_device}"
"#
    )
}

#[test]
fn pipeline_files_parse_devices_once() {
    let p = Pipeline::from_toml(&pipeline_text("cuda:1", "cuda:1"), Path::new("p.toml")).unwrap();
    assert_eq!(p.flow.device, DeviceName::Cuda(1));
    let err = Pipeline::from_toml(&pipeline_text("gpu", "cpu"), Path::new("p.toml")).unwrap_err();
    assert!(err.to_string().contains("unknown device `gpu`"), "{err}");
    // A stage placed elsewhere than `flow.device` says is refused with both names.
    let err = Pipeline::from_toml(&pipeline_text("cpu", "cuda"), Path::new("p.toml")).unwrap_err();
    assert!(
        err.to_string()
            .contains("stage `image_stats` runs on device `cuda:0` but `flow.device` is `cpu`"),
        "{err}"
    );
}

#[test]
fn stages_without_a_device_run_on_the_flow_device() {
    let registry = dicoflow::train::stages::registry();
    let mut p = Pipeline::from_toml(
        "[flow]\ndevice = \"auto\"\n[[device]]\ntype = \"image_stats\"\n[[device]]\ntype = \"delay\"\n",
        Path::new("p.toml"),
    )
    .unwrap();
    registry.place_stages(&mut p);
    assert_eq!(p.device[0].settings["device"].as_str(), Some("auto"));
    // `delay` has no device setting: nothing is added (it would be refused as unknown).
    assert!(p.device[1].settings.is_empty());
    registry.check(&p).unwrap();
}

#[test]
fn a_cuda_pipeline_is_refused_at_start_without_cuda() {
    if visible_cuda_devices() > 0 {
        eprintln!("CUDA is visible: the refusal is not what this machine does");
        return;
    }
    let p = Pipeline::from_toml(&pipeline_text("cuda", "cuda"), Path::new("p.toml")).unwrap();
    let registry = dicoflow::train::stages::registry();
    // Refused before the (missing) shards are looked at.
    let err = run(&p, &registry, &RunOptions::threads(1)).unwrap_err();
    assert!(
        matches!(&err, FlowError::Device { setting, .. } if setting == "flow.device"),
        "{err}"
    );
    assert!(err.to_string().contains(NO_CUDA), "{err}");

    // A stage built directly reports its own setting.
    let err = ImageStats::try_new(&ImageStatsConfig {
        device: DeviceName::Cuda(0),
    })
    .unwrap_err();
    assert!(err.to_string().contains("image_stats"), "{err}");
    assert!(err.to_string().contains(NO_CUDA), "{err}");

    // A shipped CUDA pipeline: refused at start; its training stage, built directly,
    // refuses its own `device` setting.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/coco_xe.toml");
    let mut p = Pipeline::load(&path).unwrap();
    let err = run(&p, &registry, &RunOptions::threads(1)).unwrap_err();
    assert!(err.to_string().contains(NO_CUDA), "{err}");
    // The file names the device once, in [flow]; the stage gets it from there.
    assert!(!p.device[0].settings.contains_key("device"));
    registry.place_stages(&mut p);
    assert_eq!(p.device[0].settings["device"].as_str(), Some("cuda:0"));
    let ctor = registry.build_device(&p.device[0]).unwrap();
    match ctor() {
        Ok(_) => panic!("train_captioner built on CUDA without CUDA"),
        Err(err) => {
            let text = err.to_string();
            assert!(
                text.starts_with("stage `train_captioner`: device: "),
                "{text}"
            );
            assert!(text.contains(NO_CUDA), "{text}");
        }
    }
}

#[test]
fn the_command_line_parses_the_same_names() {
    let o = common::dicoflow_command()
        .args([
            "score",
            "--results",
            "r.json",
            "--images",
            "i",
            "--clip",
            "c.safetensors",
            "--device",
            "gpu",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown device `gpu`"), "{err}");
}

#[test]
fn parses_the_four_forms_and_nothing_else() {
    let ok = [
        ("cpu", DeviceName::Cpu),
        ("cuda", DeviceName::Cuda(0)),
        ("cuda:0", DeviceName::Cuda(0)),
        ("cuda:3", DeviceName::Cuda(3)),
        ("auto", DeviceName::Auto),
    ];
    for (s, want) in ok {
        assert_eq!(s.parse::<DeviceName>(), Ok(want), "{s}");
    }
    for bad in [
        "", "gpu", "CPU", "Cuda", " cpu", "cuda:", "cuda:-1", "cuda:+1", "cuda:x", "cuda:1:2",
        "cuda0", "mps",
    ] {
        let err = bad.parse::<DeviceName>().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("unknown device `{bad}`: use cpu, cuda, cuda:K (K a GPU index) or auto")
        );
    }
}

#[test]
fn display_parses_back() {
    for d in [DeviceName::Cpu, DeviceName::Cuda(2), DeviceName::Auto] {
        assert_eq!(d.to_string().parse::<DeviceName>(), Ok(d));
    }
}

#[test]
fn resolution_checks_the_visible_devices() {
    use tch::Device;
    assert_eq!(DeviceName::Cpu.resolve_with(0), Ok(Device::Cpu));
    assert_eq!(DeviceName::Auto.resolve_with(0), Ok(Device::Cpu));
    assert_eq!(DeviceName::Auto.resolve_with(2), Ok(Device::Cuda(0)));
    assert_eq!(DeviceName::Cuda(1).resolve_with(2), Ok(Device::Cuda(1)));
    let err = DeviceName::Cuda(0).resolve_with(0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "device `cuda:0` asked for, but no CUDA device is visible; use `cpu`, or `auto` \
         to take the GPU when there is one"
    );
    let err = DeviceName::Cuda(2).resolve_with(2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "device `cuda:2` asked for, but 2 CUDA device(s) are visible (cuda:0 to cuda:1)"
    );
}

#[test]
fn replica_labels() {
    assert_eq!(DeviceName::Cuda(0).replica_label(0, 1), "cuda:0");
    assert_eq!(DeviceName::Cuda(1).replica_label(1, 2), "cuda:2");
    assert_eq!(DeviceName::Cpu.replica_label(1, 2), "cpu:1");
}

#[test]
fn serde_uses_the_text_form() {
    #[derive(Debug, Deserialize, Serialize)]
    struct S {
        device: DeviceName,
    }
    let s: S = toml::from_str("device = \"cuda:1\"").unwrap();
    assert_eq!(s.device, DeviceName::Cuda(1));
    assert_eq!(toml::to_string(&s).unwrap().trim(), "device = \"cuda:1\"");
    let err = toml::from_str::<S>("device = \"gpu\"").unwrap_err();
    assert!(err.to_string().contains("unknown device `gpu`"), "{err}");
}
