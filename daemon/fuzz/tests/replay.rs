//! Every target over its seed corpus and over every input a fuzzer found a fault with
//! (`findings/<target>/`, kept with the fix): a fault fixed once stays fixed, and the
//! seeds are what the daemon really reads.

use std::path::{Path, PathBuf};

fn inputs(folder: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(folder)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_target_runs_clean_over_its_seeds_and_past_findings() {
    for (target, run) in commeow_fuzz::TARGETS {
        let seeds = inputs("corpus", target);
        assert!(!seeds.is_empty(), "{target} has no seed corpus");
        for path in seeds.iter().chain(&inputs("findings", target)) {
            run(&read(path));
        }
    }
}

/// The JSON seeds are bodies the API takes: a fuzzer mutating refused bodies would spend
/// its time on the first byte of serde's error path.
#[test]
fn the_api_body_seeds_are_accepted_as_sent() {
    let kinds = commeow::http::BODY_KINDS;
    for path in inputs("corpus", "json_body") {
        let data = read(&path);
        let Some((&which, body)) = data.split_first() else {
            panic!("{} is empty", path.display());
        };
        if let Some(kind) = kinds.get(usize::from(which)) {
            assert_eq!(
                commeow::http::parse_body(kind, body),
                Some(Ok(())),
                "{} as {kind}",
                path.display()
            );
        }
    }
}

/// The RTMP seed is a real publish (ffmpeg's, after the handshake): through the target it
/// reaches the publish, both codec configurations and frames, so mutations start deep.
#[test]
fn the_rtmp_seed_reaches_media() {
    let reached = commeow_fuzz::rtmp_messages(&read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/rtmp/ffmpeg-publish-first-frames"),
    ));
    assert_eq!(
        (
            reached.publishes,
            reached.video_configs,
            reached.audio_configs
        ),
        (1, 1, 1),
        "{reached:?}"
    );
    assert!(reached.frames > 0, "{reached:?}");
}

/// The offer seeds are answered as sent (a browser's and str0m's), so the fuzzer mutates
/// offers the box takes, not ones it refuses at the first line.
#[test]
fn the_whep_offer_seeds_are_answered() {
    let cert = commeow::webrtc::certificate().expect("the box's certificate");
    for path in inputs("corpus", "whep_offer") {
        let offer = String::from_utf8(read(&path)).expect("UTF-8");
        let box_address = std::net::SocketAddr::from(([127, 0, 0, 1], 8189));
        let answered = commeow::webrtc::answer_offer(&offer, &[box_address], 0x42e01f, &cert)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            answered.answer.contains("a=ice-lite"),
            "{}",
            answered.answer
        );
        assert!(
            answered.answer.contains("H264/90000"),
            "{}",
            answered.answer
        );
    }
}
