//! Cutting a JSONL log back to a resume point.
//!
//! A run killed after its latest checkpoint has already logged the batches (and
//! validations) it trained past that checkpoint; the resumed run trains them
//! again and logs them again. Appending would leave each of them twice in the
//! log, and every chart or mean drawn from it would count them twice. So before
//! a resumed run appends, the lines past the checkpoint are dropped.

use std::io::Write;
use std::path::Path;

/// Keeps the lines of the JSONL file `path` that are at or before position
/// `last` (`position` reads a line's position, e.g. its batch time), and drops
/// the others; returns how many lines were dropped.
///
/// A line without a position (a run's closing summary) is kept when it comes
/// before the first line past `last`, since it closes an earlier part of the
/// log. Any line that is not JSON (such as the torn last line of a killed run,
/// which the next line appended would run into) is dropped. The
/// file is rewritten beside itself and renamed over the original, so a crash
/// while rewinding leaves either the old log or the new one. A missing file is
/// left missing (0 dropped).
///
/// # Errors
/// I/O errors reading or writing the file.
pub fn rewind_jsonl(
    path: &Path,
    last: u64,
    position: impl Fn(&serde_json::Value) -> Option<u64>,
) -> std::io::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0;
    // Whether a line past `last` has been seen: unpositioned lines after it
    // close the part of the log being dropped.
    let mut cut = false;
    for line in text.lines() {
        let keep = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => match position(&v) {
                Some(p) => {
                    cut |= p > last;
                    p <= last
                }
                None => !cut,
            },
            Err(_) => false,
        };
        if keep {
            kept.push_str(line);
            kept.push('\n');
        } else {
            dropped += 1;
        }
    }
    if dropped == 0 && (text.is_empty() || text.ends_with('\n')) {
        return Ok(0);
    }
    let tmp = path.with_extension("jsonl.rewind");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(kept.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(v: &serde_json::Value) -> Option<u64> {
        v.get("time")?.as_u64()
    }

    #[test]
    fn lines_past_the_resume_point_and_torn_lines_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            "{\"time\":0}\n{\"time\":1}\n{\"summary\":1}\n{\"time\":2}\n{\"time\":3}\n\
             {\"summary\":2}\n{\"time\":2,\"more\":1}\n{\"time\":4,\"tor",
        )
        .unwrap();
        assert_eq!(rewind_jsonl(&path, 2, time).unwrap(), 3);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"time\":0}\n{\"time\":1}\n{\"summary\":1}\n{\"time\":2}\n{\"time\":2,\"more\":1}\n"
        );
        // Nothing past the point: the file is left as it is.
        assert_eq!(rewind_jsonl(&path, 2, time).unwrap(), 0);
        assert_eq!(
            rewind_jsonl(&dir.path().join("none.jsonl"), 2, time).unwrap(),
            0
        );
        assert!(!dir.path().join("none.jsonl").exists());
        assert!(!path.with_extension("jsonl.rewind").exists());
    }

    #[test]
    fn a_line_that_is_not_json_does_not_cut_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            "{\"time\":0}\nnot json\n{\"summary\":1}\n{\"time\":1}\n",
        )
        .unwrap();
        assert_eq!(rewind_jsonl(&path, 1, time).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"time\":0}\n{\"summary\":1}\n{\"time\":1}\n"
        );
    }

    #[test]
    fn a_last_line_without_its_newline_is_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"time\":0}\n{\"time\":1}").unwrap();
        assert_eq!(rewind_jsonl(&path, 5, time).unwrap(), 0);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"time\":0}\n{\"time\":1}\n"
        );
    }
}
