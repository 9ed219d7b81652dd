//! Spill tests: identity and locking, write and read back, damaged files, size parsing.

use super::*;

fn config(dir: &Path) -> SpillConfig {
    SpillConfig {
        dir: dir.to_owned(),
        max_bytes: DEFAULT_MAX_BYTES,
    }
}

/// Everything the spill holds after `cursor`, reading from disk as the outbox does.
fn drain(spill: &mut Spill, mut cursor: u64) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    for _ in 0..1_000 {
        match spill.next(cursor, 100, usize::MAX) {
            Next::Done => return out,
            Next::Records(r) => {
                cursor = r.last().unwrap().0;
                out.extend(r);
            }
            Next::Read(req) => {
                let read = read(&req);
                assert_eq!(spill.install(req, read), 0);
            }
        }
    }
    panic!("the spill never ran dry");
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "spill"))
        .collect();
    v.sort();
    v
}

#[test]
fn keeps_the_agent_id_and_refuses_another_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (spill, first) = Spill::open(&config(dir.path()), "", "node-7").unwrap();
    assert!(first.agent_id.starts_with("node-7-"), "{}", first.agent_id);
    assert_eq!((first.next_seq, first.acked), (1, 0));

    // A second process on the same directory is refused while the first holds it.
    let err = Spill::open(&config(dir.path()), "", "node-7")
        .err()
        .unwrap();
    assert!(matches!(err, SpillError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("its own --spill-dir"), "{err}");
    drop(spill);

    let (_spill, again) = Spill::open(&config(dir.path()), "", "node-7").unwrap();
    assert_eq!(again.agent_id, first.agent_id);
    assert_eq!(
        again.next_seq, SEQ_BLOCK,
        "seqs below the reservation may be used"
    );
    drop(_spill);

    let given = Spill::open(&config(dir.path()), &first.agent_id, "node-7");
    assert!(given.is_ok(), "the stored id given explicitly is fine");
    drop(given);
    let err = Spill::open(&config(dir.path()), "someone-else", "node-7")
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("--agent-id {}", first.agent_id)),
        "{msg}"
    );
    assert!(msg.contains("someone-else"), "{msg}");
}

#[test]
fn an_explicit_id_is_kept_in_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, r) = Spill::open(&config(dir.path()), "agent-x", "n").unwrap();
    assert_eq!(r.agent_id, "agent-x");
}

#[test]
fn an_unusable_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = Spill::open(&config(&file.join("spill")), "", "n")
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains("cannot create the spill directory"), "{msg}");
    assert!(msg.contains("--spill-dir"), "{msg}");
}

#[test]
fn writes_read_back_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spill, _) = Spill::open(&config(dir.path()), "a", "n").unwrap();
    for seq in 1..=50u64 {
        spill
            .append(seq, format!("result {seq}").as_bytes())
            .unwrap();
    }
    assert_eq!(spill.records(), 50);
    spill.ack(10);
    spill.close(51).unwrap();
    drop(spill);

    let (mut spill, rec) = Spill::open(&config(dir.path()), "a", "n").unwrap();
    assert_eq!(rec.acked, 10);
    assert_eq!(rec.spilled, 40);
    assert_eq!(rec.next_seq, 51, "a clean shutdown leaves no seq gap");
    let got = drain(&mut spill, rec.acked);
    assert_eq!(got.len(), 40);
    for (seq, bytes) in got {
        assert_eq!(&bytes[..], format!("result {seq}").as_bytes());
    }
}

#[test]
fn a_segment_cut_mid_record_keeps_its_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spill, _) = Spill::open(&config(dir.path()), "a", "n").unwrap();
    for seq in 1..=10u64 {
        spill.append(seq, &[b'r'; 100]).unwrap();
    }
    spill.close(11).unwrap();
    drop(spill);
    // A crash mid-write: the last record lost its last 30 bytes.
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 30).unwrap();
    drop(f);

    let (mut spill, rec) = Spill::open(&config(dir.path()), "a", "n").unwrap();
    assert_eq!(rec.spilled, 9);
    let got: Vec<u64> = drain(&mut spill, 0).into_iter().map(|r| r.0).collect();
    assert_eq!(got, (1..=9).collect::<Vec<_>>());
    let whole = segment::MAGIC.len() + 9 * (segment::FRAME_BYTES + 100);
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        whole as u64,
        "the damaged tail is cut off the file"
    );
    // Later appends go to a new segment after the damaged one and read back in order.
    spill.append(rec.next_seq, b"new").unwrap();
    let got: Vec<u64> = drain(&mut spill, 9).into_iter().map(|r| r.0).collect();
    assert_eq!(got, [rec.next_seq]);
}

#[test]
fn garbage_files_are_skipped_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spill, _) = Spill::open(&config(dir.path()), "a", "n").unwrap();
    for seq in 1..=3u64 {
        spill.append(seq, b"good").unwrap();
    }
    spill.close(4).unwrap();
    drop(spill);
    // Not a spill file at all, a header with nothing after it, and random bytes after the
    // good records of the real one.
    std::fs::write(
        dir.path().join("seg-00000000000000000100.spill"),
        b"garbage!!",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("seg-00000000000000000200.spill"),
        segment::MAGIC,
    )
    .unwrap();
    let real = segment_files(dir.path())[0].clone();
    let mut data = std::fs::read(&real).unwrap();
    data.extend((0..200u32).map(|i| (i * 7919 % 251) as u8));
    std::fs::write(&real, data).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();

    let (mut spill, rec) = Spill::open(&config(dir.path()), "a", "n").unwrap();
    assert_eq!(rec.spilled, 3);
    let got: Vec<u64> = drain(&mut spill, 0).into_iter().map(|r| r.0).collect();
    assert_eq!(got, [1, 2, 3]);
    assert_eq!(
        segment_files(dir.path()),
        [real],
        "files without a record are removed"
    );
    assert!(
        dir.path().join("notes.txt").exists(),
        "other files are left alone"
    );
}

#[test]
fn a_damaged_state_file_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(state::FILE), "{}").unwrap();
    let err = Spill::open(&config(dir.path()), "", "n").err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("agent-state.json is not valid"), "{msg}");
    assert!(msg.contains("delete it"), "{msg}");
}

#[test]
fn acknowledged_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpillConfig {
        dir: dir.path().to_owned(),
        max_bytes: 128 << 10, // 16 KiB segments
    };
    let (mut spill, _) = Spill::open(&cfg, "a", "n").unwrap();
    for seq in 1..=400u64 {
        spill.append(seq, &[0; 100]).unwrap();
    }
    let before = segment_files(dir.path()).len();
    assert!(before >= 3, "{before} segments");
    let released = spill.ack(200);
    assert!(released > 0 && released <= 200, "{released}");
    assert!(segment_files(dir.path()).len() < before);
    assert_eq!(spill.ack(400), 400 - released);
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!((spill.records(), spill.bytes()), (0, 0));
}

#[test]
fn sizes_parse_with_binary_units_and_bad_ones_say_how() {
    for (s, want) in [
        ("1GiB", 1 << 30),
        ("512MiB", 512 << 20),
        ("64KiB", 64 << 10),
        ("1048576", 1 << 20),
        ("2TiB", 2 << 40),
    ] {
        assert_eq!(parse_size(s), Ok(want), "{s}");
    }
    for (s, want) in [
        ("", "is not a size"),
        ("lots", "is not a size"),
        ("1GB", "unknown size unit \"GB\""),
        ("10KiB", "below the smallest spill size, 64KiB"),
        ("99999999999TiB", "too large"),
    ] {
        let err = parse_size(s).unwrap_err();
        assert!(err.contains(want), "{s}: {err}");
        if !err.contains("too large") {
            assert!(err.contains("write it like 1GiB"), "{s}: {err}");
        }
    }
}

#[test]
fn damage_found_while_running_is_skipped_and_appends_move_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spill, _) = Spill::open(&config(dir.path()), "a", "n").unwrap();
    for seq in 1..=10u64 {
        spill.append(seq, &[b'r'; 100]).unwrap();
    }
    spill.flush().unwrap();
    // Someone cuts the open segment under the agent's feet.
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 30).unwrap();
    drop(f);
    let got: Vec<u64> = drain(&mut spill, 0).into_iter().map(|r| r.0).collect();
    assert_eq!(got, (1..=9).collect::<Vec<_>>());
    // Nothing is appended after the damage: the next result opens a new segment.
    spill.append(11, b"after").unwrap();
    let got: Vec<u64> = drain(&mut spill, 9).into_iter().map(|r| r.0).collect();
    assert_eq!(got, [11]);
    assert_eq!(segment_files(dir.path()).len(), 2);
}
