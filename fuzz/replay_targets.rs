// The replay_log target, `include!`d by targets.rs (so in the same module, with its imports and
// constants): kept apart so that each file stays one size a reader takes in at once.

// ---- target: replay_log -----------------------------------------------------------------------
//
// The replay log's layout, written here from storage-format.md ("Replay log") rather than taken
// from the crate, so the seeds and the checks pin the documented bytes.

/// Length of the replay log header; the first record starts here.
pub const REPLAY_HEADER_LEN: usize = 36;
/// The `log_id` of every header the target writes in front of the input.
pub const REPLAY_LOG_ID: u64 = 0x5eed_0f10_951d;
/// Record kinds.
pub mod kind {
    pub const SET: u8 = 1;
    pub const DELETE: u8 = 2;
    pub const ACK: u8 = 3;
    pub const OVERFLOW: u8 = 4;
    pub const OVERFLOW_CLEARED: u8 = 5;
}

/// A replay log header: magic, version, 6 reserved zero bytes, `log_id`, `next_seq`, CRC of the
/// 32 bytes before it.
pub fn replay_header(version: u16, log_id: u64, next_seq: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(REPLAY_HEADER_LEN);
    h.extend_from_slice(b"UNOCRPLY");
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&[0; 6]);
    h.extend_from_slice(&log_id.to_le_bytes());
    h.extend_from_slice(&next_seq.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// One replay record: CRC (of the 8 bytes of `log_id`, then everything after the CRC), kind,
/// flags, key length, value length, seq, expiry, key, value.
pub fn replay_record(
    log_id: u64,
    kind: u8,
    seq: u64,
    expires_at_ms: u64,
    key: &[u8],
    value: &[u8],
) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    fix_replay_crc(&mut out, log_id);
    out
}

fn fix_replay_crc(rec: &mut [u8], log_id: u64) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&log_id.to_le_bytes());
    hasher.update(rec.get(4..).unwrap_or_default());
    let crc = hasher.finalize();
    if let Some(slot) = rec.get_mut(..4) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// The `(log_id, next_seq)` of a header that checks out as the document says (magic, CRC,
/// version 1, reserved zero); `Err(Some(version))` for a good CRC with another version.
fn read_replay_header(file: &[u8]) -> Result<(u64, u64), Option<u16>> {
    let h = file.get(..REPLAY_HEADER_LEN).ok_or(None)?;
    let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or_default());
    if &h[..8] != b"UNOCRPLY" || crc32fast::hash(&h[..32]).to_le_bytes() != h[32..36] {
        return Err(None);
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != 1 {
        return Err(Some(version));
    }
    if h[10..16].iter().any(|&b| b != 0) {
        return Err(None);
    }
    Ok((u64_at(16), u64_at(24)))
}

/// The log id a header that failed its checks still holds, if its version field reads 1
/// (storage-format.md, recovery step 3).
fn damaged_header_log_id(file: &[u8]) -> Option<u64> {
    let h = file.get(..REPLAY_HEADER_LEN)?;
    if h[8..10] != [1, 0] {
        return None;
    }
    Some(u64::from_le_bytes(h[16..24].try_into().unwrap_or_default()))
}

/// Every op read is a record with a valid CRC under `log_id`, at some offset of `file`: the
/// most any op read can come from (a delete may come from a set, turned by damage or expiry).
fn assert_ops_are_records(file: &[u8], log_id: u64, ops: &[ReplayOp]) {
    let mut found: Vec<ReplayRecord> = Vec::new();
    for at in REPLAY_HEADER_LEN..file.len() {
        if let Some((r, _)) = read_replay_record(&file[at..], log_id) {
            found.push(r);
        }
    }
    for op in ops {
        let from_record = found.iter().any(|r| {
            r.key == op.key
                && r.seq == op.seq
                && match &op.action {
                    ReplayAction::Set { value, expires_at_ms } => {
                        r.kind == kind::SET && r.value == *value && r.expires_at_ms == *expires_at_ms
                    }
                    ReplayAction::Delete => r.kind == kind::DELETE || r.kind == kind::SET,
                }
        });
        assert!(
            from_record,
            "op {:?} seq {} is no valid record of the input",
            op.key, op.seq
        );
    }
}

/// A replay record as the document defines a valid one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRecord {
    pub kind: u8,
    pub seq: u64,
    pub expires_at_ms: u64,
    pub key: String,
    pub value: Vec<u8>,
}

/// The valid record at the start of `buf` and its length: known kind, zero flags, the fields
/// that kind uses (the table in storage-format.md), inside `buf`, UTF-8 key, CRC.
fn read_replay_record(buf: &[u8], log_id: u64) -> Option<(ReplayRecord, usize)> {
    let len = replay_candidate_len(buf)?;
    let rec = &buf[..len];
    let key_len = usize::from(u16::from_le_bytes([rec[6], rec[7]]));
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&log_id.to_le_bytes());
    hasher.update(&rec[4..]);
    if hasher.finalize().to_le_bytes() != rec[..4] {
        return None;
    }
    let record = ReplayRecord {
        kind: rec[4],
        seq: u64::from_le_bytes(rec[12..20].try_into().ok()?),
        expires_at_ms: u64::from_le_bytes(rec[20..28].try_into().ok()?),
        key: std::str::from_utf8(&rec[28..28 + key_len]).ok()?.to_owned(),
        value: rec[28 + key_len..].to_vec(),
    };
    Some((record, len))
}

/// Input layout of `replay_log`:
///
/// | bytes | meaning |
/// |-------|---------|
/// | 0     | flags, below |
/// | 1     | `next_seq` of the header written with `HEADER`: `b`, or for `b >= 250` near `u64::MAX` |
/// | 2..   | the records (with `HEADER`), else the whole file |
///
/// Flags: bit 0 (`HEADER`) puts a valid header (log id [`REPLAY_LOG_ID`]) in front of the
/// bytes; bit 1 (`FIX_CRC`) gives every record that parses back to back from the first a valid
/// CRC; bit 2 (`MARK`) leaves `replay.overflowed` next to the log.
pub mod replay_flags {
    pub const HEADER: u8 = 1;
    pub const FIX_CRC: u8 = 2;
    pub const MARK: u8 = 4;
}

/// The replay log file a `replay_log` input describes, and whether it asks for the mark file.
pub fn replay_log_file(data: &[u8]) -> (Vec<u8>, bool) {
    let mut cur = Cursor(data);
    let flag_bits = cur.byte();
    let seq_byte = cur.byte();
    let next_seq = match seq_byte {
        0..=249 => u64::from(seq_byte),
        b => u64::MAX - u64::from(255 - b),
    };
    let mut file = if flag_bits & replay_flags::HEADER != 0 {
        replay_header(1, REPLAY_LOG_ID, next_seq)
    } else {
        Vec::new()
    };
    let body_at = file.len();
    file.extend_from_slice(cur.0);
    if flag_bits & replay_flags::FIX_CRC != 0 {
        let log_id = read_replay_header(&file).map_or(REPLAY_LOG_ID, |(id, _)| id);
        let mut at = body_at.max(REPLAY_HEADER_LEN);
        while let Some(h) = file.get(at..at + 28) {
            let key_len = usize::from(u16::from_le_bytes([h[6], h[7]]));
            let value_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
            let len = 28 + key_len + value_len;
            let Some(rec) = file.get_mut(at..at + len) else {
                break;
            };
            if rec.iter().all(|&b| b == 0) {
                break;
            }
            fix_replay_crc(rec, log_id);
            at += len;
        }
    }
    (file, flag_bits & replay_flags::MARK != 0)
}

/// The scan budget's fixed part ("Recovery (open)", step 4: four times the log's length plus
/// 1 MiB): a log whose every candidate together costs no more is scanned in full.
const REPLAY_SEARCH_BUDGET_BASE: u64 = 1 << 20;

/// The length of the record whose header starts `buf`, if the header is complete and passes the
/// field rules (the table in storage-format.md), wherever the record ends.
fn replay_fields_len(buf: &[u8]) -> Option<usize> {
    let h = buf.get(..28)?;
    let (kind, flags) = (h[4], h[5]);
    let key_len = usize::from(u16::from_le_bytes([h[6], h[7]]));
    let value_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let seq = u64::from_le_bytes(h[12..20].try_into().ok()?);
    let expires_at_ms = u64::from_le_bytes(h[20..28].try_into().ok()?);
    let keyed = matches!(kind, kind::SET | kind::DELETE | kind::ACK);
    let fields_ok = (1..=5).contains(&kind)
        && flags == 0
        && if keyed {
            (1..=4096).contains(&key_len)
        } else {
            key_len == 0
        }
        && (kind == kind::SET || (value_len == 0 && expires_at_ms == 0))
        && (keyed || seq == 0);
    fields_ok.then_some(28 + key_len + value_len)
}

/// The length of a candidate a search pays for: a header passing the field rules, of a record
/// inside `buf`.
fn replay_candidate_len(buf: &[u8]) -> Option<usize> {
    replay_fields_len(buf).filter(|&len| len <= buf.len())
}

/// What every candidate of the log would cost a search, at most.
fn replay_search_cost(file: &[u8]) -> u64 {
    (REPLAY_HEADER_LEN..file.len())
        .filter_map(|at| replay_candidate_len(&file[at..]))
        .map(|len| len as u64)
        .sum()
}

enum ScanItem {
    Record(ReplayRecord),
    Damage(usize, usize),
}

struct ReplayScan {
    items: Vec<ScanItem>,
    torn_tail: usize,
}

/// The scan of "Recovery (open)", step 4, from the document: valid records back to back; past
/// anything else, the next offset where a valid record decodes, the bytes between being damage;
/// with none, a torn tail if the record there runs past the end, or the file ends in a zero
/// byte, else damage.
fn replay_scan(file: &[u8], log_id: u64) -> ReplayScan {
    let mut scan = ReplayScan {
        items: Vec::new(),
        torn_tail: 0,
    };
    let mut at = REPLAY_HEADER_LEN;
    while at < file.len() {
        if let Some((r, len)) = read_replay_record(&file[at..], log_id) {
            scan.items.push(ScanItem::Record(r));
            at += len;
            continue;
        }
        match (at + 1..file.len()).find(|&next| read_replay_record(&file[next..], log_id).is_some()) {
            Some(next) => {
                scan.items.push(ScanItem::Damage(at, next));
                at = next;
            }
            None => {
                let rest = &file[at..];
                // A header of zeros gives no length: not cut short (the last byte decides).
                let cut_short =
                    rest.len() < 28 || replay_fields_len(rest).is_some_and(|len| len > rest.len());
                if cut_short && whole_but_for_a_length(rest, log_id) {
                    scan.items.push(ScanItem::Damage(at, file.len()));
                } else if cut_short || file.last() == Some(&0) {
                    scan.torn_tail = rest.len();
                } else {
                    scan.items.push(ScanItem::Damage(at, file.len()));
                }
                return scan;
            }
        }
    }
    scan
}

/// A record that runs past the end of the file but checks out (CRC included) with its key
/// length, or its value length, made to end it at the end of the file: written whole, a length
/// damaged since (storage-format.md, replay log recovery step 4).
fn whole_but_for_a_length(rest: &[u8], log_id: u64) -> bool {
    if rest.len() < 28 {
        return false;
    }
    let key_len = usize::from(u16::from_le_bytes([rest[6], rest[7]]));
    let value_len = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
    let body = rest.len() - 28;
    let mut candidates = Vec::new();
    if let Some(v) = body.checked_sub(key_len).and_then(|v| u32::try_from(v).ok()) {
        let mut fixed = rest.to_vec();
        fixed[8..12].copy_from_slice(&v.to_le_bytes());
        candidates.push(fixed);
    }
    if let Some(k) = body.checked_sub(value_len).and_then(|k| u16::try_from(k).ok()) {
        let mut fixed = rest.to_vec();
        fixed[6..8].copy_from_slice(&k.to_le_bytes());
        candidates.push(fixed);
    }
    candidates.iter().any(|rec| {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&log_id.to_le_bytes());
        hasher.update(&rec[4..]);
        hasher.finalize().to_le_bytes() == rec[..4]
    })
}

/// The state storage-format.md gives a scan ("Meaning", and damage in "Recovery (open)": the
/// sets pending at a damaged range become deletes, and the flag is set for good), as `pending()`
/// lists it at [`NOW_MS`]; the overflow flag; the highest seq read.
fn replay_model(scan: &ReplayScan) -> (BTreeMap<String, (u64, ReplayAction)>, bool, u64) {
    let mut pending: BTreeMap<String, (u64, ReplayAction)> = BTreeMap::new();
    let (mut flagged, mut damaged, mut max_seq) = (false, false, 0);
    for item in &scan.items {
        let r = match item {
            ScanItem::Record(r) => r,
            ScanItem::Damage(..) => {
                damaged = true;
                for (_, action) in pending.values_mut() {
                    *action = ReplayAction::Delete;
                }
                continue;
            }
        };
        max_seq = max_seq.max(r.seq);
        match r.kind {
            kind::SET | kind::DELETE => {
                if pending.get(&r.key).is_some_and(|(seq, _)| *seq >= r.seq) {
                    continue;
                }
                let action = if r.kind == kind::SET {
                    ReplayAction::Set {
                        value: r.value.clone(),
                        expires_at_ms: r.expires_at_ms,
                    }
                } else {
                    ReplayAction::Delete
                };
                pending.insert(r.key.clone(), (r.seq, action));
            }
            kind::ACK => {
                if pending.get(&r.key).is_some_and(|(seq, _)| *seq == r.seq) {
                    pending.remove(&r.key);
                }
            }
            kind::OVERFLOW => flagged = true,
            _ => flagged = false,
        }
    }
    for (_, action) in pending.values_mut() {
        if let ReplayAction::Set { expires_at_ms, .. } = action {
            if *expires_at_ms != 0 && *expires_at_ms <= NOW_MS {
                *action = ReplayAction::Delete;
            }
        }
    }
    (pending, flagged || damaged, max_seq)
}

fn replay_options(clock: &ManualClock) -> ReplayOptions {
    ReplayOptions::default().clock(Arc::new(clock.clone()))
}

/// `pending()` must list deletes before sets, each in seq order.
fn assert_replay_order(ops: &[ReplayOp]) {
    let order: Vec<(bool, u64)> = ops
        .iter()
        .map(|op| (matches!(op.action, ReplayAction::Set { .. }), op.seq))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "pending() is not in replay order: {order:?}"
    );
}

/// Writes the input as `replay.log`, opens the queue, reads every pending op, pushes one,
/// reopens. No step may panic; open may fail only with `UnsupportedVersion` for a header with a
/// good CRC and another version. Every op read must be a record with a valid CRC in the input
/// (a delete may come from a set, turned by damage or expiry); a log of back-to-back valid
/// records, maybe followed by zeros, must give exactly the state the document's rules give; a
/// damaged header, an overflowed queue holding what the records under the id it still holds
/// give (nothing if its version field is not 1). After the push, a reopen finds a clean log
/// holding the same state.
pub fn replay_log_target(data: &[u8]) {
    let (file, mark) = replay_log_file(data);
    let Ok(tmp) = tempfile::tempdir() else { return };
    let dir = tmp.path();
    if fs::write(dir.join("replay.log"), &file).is_err()
        || (mark && fs::write(dir.join("replay.overflowed"), b"").is_err())
    {
        return;
    }
    let clock = ManualClock::new(NOW_MS);
    let header = read_replay_header(&file);
    let queue = match ReplayQueue::open(dir, replay_options(&clock)) {
        Ok(queue) => queue,
        Err(Error::UnsupportedVersion { found, .. }) if header == Err(Some(found)) => return,
        Err(e) => panic!("open failed: {e}"),
    };
    let ops = queue.pending();
    assert_replay_order(&ops);
    let report = queue.recovery_report().clone();
    let Ok((log_id, next_seq)) = header else {
        // A damaged header: the queue is overflowed, and keeps only ops of records that check
        // out under the log id the header still holds, if its version field reads 1; none else.
        assert!(queue.is_overflowed(), "a damaged header must give an overflowed queue");
        assert!(report.header_damage.is_some());
        match damaged_header_log_id(&file) {
            Some(log_id) => {
                assert_ops_are_records(&file, log_id, &ops);
                if replay_search_cost(&file) <= REPLAY_SEARCH_BUDGET_BASE {
                    let (want, _, _) = replay_model(&replay_scan(&file, log_id));
                    let got: BTreeMap<String, (u64, ReplayAction)> = ops
                        .iter()
                        .map(|op| (op.key.clone(), (op.seq, op.action.clone())))
                        .collect();
                    assert_eq!(got, want, "a damaged header's kept ops differ from its records");
                }
            }
            None => assert!(ops.is_empty(), "a damaged header without version 1 must give an empty queue"),
        }
        return push_and_reopen(dir, &clock, queue, ops);
    };

    assert_ops_are_records(&file, log_id, &ops);

    // Within the search budget the document gives, the scan is determined by the bytes: redo it
    // here and compare everything the open reports.
    if replay_search_cost(&file) <= REPLAY_SEARCH_BUDGET_BASE {
        let scan = replay_scan(&file, log_id);
        let (want, flagged, max_seq) = replay_model(&scan);
        let got: BTreeMap<String, (u64, ReplayAction)> = ops
            .iter()
            .map(|op| (op.key.clone(), (op.seq, op.action.clone())))
            .collect();
        assert_eq!(got.len(), ops.len(), "a key is pending twice");
        assert_eq!(got, want, "pending ops differ from what the records say");
        assert_eq!(
            queue.is_overflowed(),
            flagged || mark,
            "overflow flag differs from the records"
        );
        let records = scan
            .items
            .iter()
            .filter(|i| matches!(i, ScanItem::Record(_)))
            .count() as u64;
        let damage: Vec<(usize, usize)> = scan
            .items
            .iter()
            .filter_map(|i| {
                if let ScanItem::Damage(a, b) = i {
                    Some((*a, *b))
                } else {
                    None
                }
            })
            .collect();
        let damaged_bytes = damage.iter().map(|(a, b)| (b - a) as u64).sum::<u64>();
        assert_eq!(
            (
                report.records,
                report.damaged_ranges,
                report.damaged_bytes,
                report.torn_tail_bytes
            ),
            (records, damage.len() as u64, damaged_bytes, scan.torn_tail as u64),
            "the open's report differs from the scan the document describes: {damage:?}"
        );
        let next = next_seq.max(max_seq.saturating_add(1)).max(1);
        if next < u64::MAX {
            let pushed = queue
                .push_delete("fuzz:seq")
                .unwrap_or_else(|e| panic!("push failed: {e}"));
            assert_eq!(
                pushed.seq(),
                Some(next),
                "the next seq is not the one the document gives"
            );
        }
    }
    let ops = queue.pending();
    push_and_reopen(dir, &clock, queue, ops);
}

/// Pushes a set after recovery, then reopens, compacts and reopens again: the new op and
/// everything read must be there each time, in a log that reads back clean.
fn push_and_reopen(dir: &std::path::Path, clock: &ManualClock, queue: ReplayQueue, ops: Vec<ReplayOp>) {
    let newest = ops.iter().map(|op| op.seq).max().unwrap_or(0);
    let value = b"pushed after recovery".to_vec();
    let outcome = queue
        .push_set("fuzz:new", &value, 0)
        .unwrap_or_else(|e| panic!("push after recovery failed: {e}"));
    match outcome.seq() {
        Some(seq) => {
            assert!(seq > newest, "new op got seq {seq}, not above the {newest} read");
            let op = queue.pending().into_iter().find(|op| op.key == "fuzz:new");
            let want = ReplayAction::Set {
                value,
                expires_at_ms: 0,
            };
            assert_eq!(op.map(|op| (op.seq, op.action)), Some((seq, want)));
        }
        None => assert!(
            queue.is_overflowed(),
            "a push that queued nothing must overflow the queue"
        ),
    }
    let before = queue.pending();
    let overflowed = queue.is_overflowed();
    drop(queue);
    for compact in [true, false] {
        let queue =
            ReplayQueue::open(dir, replay_options(clock)).unwrap_or_else(|e| panic!("reopen failed: {e}"));
        let report = queue.recovery_report();
        assert!(
            report.damaged_ranges == 0 && report.torn_tail_bytes == 0 && report.header_damage.is_none(),
            "the log the queue wrote reads back damaged: {report:?}"
        );
        assert_eq!(queue.pending(), before, "reopen changed the pending ops");
        assert_eq!(
            queue.is_overflowed(),
            overflowed,
            "reopen changed the overflow flag"
        );
        if compact {
            queue.compact().unwrap_or_else(|e| panic!("compact failed: {e}"));
        }
    }
}
