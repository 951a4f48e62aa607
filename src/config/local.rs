//! `[local]`: the L1 level and the memory tier in front of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::durability::Durability;
use crate::error::Result;
use crate::local::file::MapReads;

/// Where the file and redb levels keep their data when `local.path` is not set: `uno-cache-data`
/// in the working directory.
pub const DEFAULT_LOCAL_PATH: &str = "uno-cache-data";

/// Default `local.max_size` for `type = "memory"`, in items.
pub const DEFAULT_MEMORY_MAX_ITEMS: u64 = 10_000;

/// Default `local.max_size` for `type = "file"` and `type = "redb"`, in MiB.
pub const DEFAULT_DISK_MAX_MB: u64 = 1024;

/// Which implementation serves as L1 (`local.type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalKind {
    /// [`FileStore`](crate::FileStore): persistent, crash-safe (default).
    #[default]
    File,
    /// [`MemoryStore`](crate::MemoryStore): in process, bounded by item count.
    Memory,
    /// [`RedbStore`](crate::RedbStore): persistent, in a redb database.
    Redb,
}

/// When the file or redb level makes writes durable (`local.durability`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityMode {
    /// Only on flush and close. With redb a killed process loses everything since then (the
    /// file store's writes survive a kill in the page cache); see [`Durability`].
    None,
    /// Group commit every `local.durability_interval_ms` (default). With redb a killed process
    /// loses up to that interval of writes; see [`Durability`].
    #[default]
    Periodic,
    /// Before every write returns.
    EveryWrite,
}

/// The local level (`[local]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalCacheConfig {
    /// `"file"` (default), `"memory"` or `"redb"`. The TOML key is `type`.
    #[serde(rename = "type")]
    pub kind: LocalKind,
    /// Size bound: items for memory (default [`DEFAULT_MEMORY_MAX_ITEMS`]), MiB for file and redb
    /// (default [`DEFAULT_DISK_MAX_MB`], at most 1,073,741,824: 1 PiB). `None` means the default for the type, except for an
    /// existing file store, which keeps the bound it recorded (set, the bound is recorded).
    /// A file store also takes its segment size from it when its directory is created (an
    /// eighth, 64 KiB to 64 MiB), and a value must fit in one segment: a larger bound set later
    /// does not raise that limit.
    pub max_size: Option<u64>,
    /// The longest an entry lives in L1, and the TTL of a `set` without one (default 300 s). In
    /// TOML, seconds; at least 0.001 (expiries are kept in milliseconds).
    #[serde(with = "super::seconds")]
    pub ttl: Duration,
    /// Directory of the file or redb level (default [`DEFAULT_LOCAL_PATH`], relative to the
    /// working directory). The redb database is the file `cache.redb` inside it. Not expanded
    /// as by a shell: one that starts with `~` or `$VAR` is refused.
    pub path: Option<PathBuf>,
    /// `"none"`, `"periodic"` (default) or `"every_write"`.
    pub durability: DurabilityMode,
    /// The group-commit interval of `durability = "periodic"`, in milliseconds (default 1000).
    pub durability_interval_ms: u64,
    /// Permission bits of the files of the file store, the redb level and the replay queue, e.g.
    /// `file_mode = 0o640` or `file_mode = "0640"` in TOML (a decimal number such as `420` is
    /// refused: whether it means those octal digits or the mode it is in decimal cannot be
    /// told); given, existing files are set to it at open. `None` (default): `0o600` for a new
    /// store, the recorded mode (the file store) or the file's own bits (redb) for an existing
    /// one. A directory they create gets the same bits plus search where read is allowed
    /// (`0o700` by default). See
    /// [`FileStoreOptions::file_mode`](crate::FileStoreOptions::file_mode).
    #[serde(with = "mode")]
    pub file_mode: Option<u32>,
    /// The memory tier in front of a file or redb L1: how many decoded values it keeps (default
    /// [`DEFAULT_MEMORY_TIER_ITEMS`]; 0 turns it off; ignored for `type = "memory"`, which is
    /// already in memory). A typed read it answers costs no read of the file, no decode and no
    /// copy; see [`HotTier`](crate::local::hot::HotTier).
    pub memory_items: u64,
    /// The bound in MiB of the values kept in memory (default [`DEFAULT_MEMORY_TIER_MB`]): of
    /// the memory tier, per value type, or of the whole L1 with `type = "memory"`. A value
    /// weighs its bytes (the memory tier's, the bytes it was decoded from), so values larger
    /// than this bound shared out over the bound in items are bounded by their bytes rather
    /// than their count. Without it, large values (images, documents) would each take one of
    /// the 10 000 places and their RAM with it.
    pub memory_max_mb: u64,
    /// How a file L1's get that misses the page cache reads the device: `"auto"` (default),
    /// `"around"` or `"random"`. Auto reads only the page it needs when `max_size` is more than
    /// half the memory the process may use (its memory cgroup's limit included), where the
    /// kernel's read-around would read several MiB per get and evict them unused; see
    /// [`MapReads`](crate::MapReads). Ignored by the other types.
    pub map_reads: MapReads,
}

/// Default bound of the memory tier in front of a persistent L1: 10 000 decoded values. On by
/// default because a typed hit there is several times cheaper than a file-store hit (no mmap
/// read, CRC or decode), and 10 000 small values cost a few MB of RAM, which a desktop or edge
/// process can spare; set `memory_items = 0` where RAM is tighter than that.
pub const DEFAULT_MEMORY_TIER_ITEMS: u64 = 10_000;

/// Default `local.memory_max_mb`: 64 MiB (per value type in the memory tier), so the default
/// tier, or memory L1, holds no more than that many bytes of values, whatever their size (its
/// 10 000 values may be up to about 6.5 KiB each before this bound, rather than the count,
/// binds). The tier counts the bytes a value was decoded from: a decoded value made of many
/// small heap parts (maps, short strings) takes several times that in RAM.
pub const DEFAULT_MEMORY_TIER_MB: u64 = 64;

impl Default for LocalCacheConfig {
    fn default() -> Self {
        LocalCacheConfig {
            kind: LocalKind::default(),
            max_size: None,
            ttl: Duration::from_secs(300),
            path: None,
            durability: DurabilityMode::default(),
            durability_interval_ms: 1000,
            file_mode: None,
            memory_items: DEFAULT_MEMORY_TIER_ITEMS,
            memory_max_mb: DEFAULT_MEMORY_TIER_MB,
            map_reads: MapReads::Auto,
        }
    }
}

impl LocalCacheConfig {
    /// `max_size`, or the default for the type.
    #[must_use]
    pub fn effective_max_size(&self) -> u64 {
        self.max_size.unwrap_or(match self.kind {
            LocalKind::Memory => DEFAULT_MEMORY_MAX_ITEMS,
            LocalKind::File | LocalKind::Redb => DEFAULT_DISK_MAX_MB,
        })
    }

    /// `path`, or [`DEFAULT_LOCAL_PATH`].
    #[must_use]
    pub fn effective_path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(DEFAULT_LOCAL_PATH))
    }

    /// The durability policy of the file or redb level.
    #[must_use]
    pub fn effective_durability(&self) -> Durability {
        match self.durability {
            DurabilityMode::None => Durability::None,
            DurabilityMode::Periodic => {
                Durability::Periodic(Duration::from_millis(self.durability_interval_ms))
            }
            DurabilityMode::EveryWrite => Durability::EveryWrite,
        }
    }
}

/// Refuses a path setting that can name no file: empty, only blanks (it named a directory
/// called " " in the working directory), or holding a NUL byte, which no file name can (it
/// failed later, at the first open, as an I/O error naming no field and printing the raw byte).
/// A TOML string is UTF-8, so no other byte is out of reach.
pub(super) fn check_path(field: &str, path: Option<&Path>) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let bytes = path.as_os_str().as_encoded_bytes();
    let reason = if bytes.is_empty() {
        "must not be empty; leave it out for the default"
    } else if bytes.contains(&0) {
        "holds a NUL byte (\\u0000), which no file name can; remove it"
    } else if bytes.iter().all(u8::is_ascii_whitespace) {
        "is blank (only spaces or tabs), which would name a file of blanks in the working directory; give a path, or leave it out for the default"
    } else if let Some(first) = unexpanded(path) {
        // `~/.cache/app` made a directory called `~` in the working directory, without a word.
        return Err(super::invalid(
            field,
            format!(
                "starts with {first}, which is not expanded (a configuration file is not read by a shell): it would name a file or directory called {first:?} in the working directory; give the path in full (a program can set it from its home or cache directory)"
            ),
        ));
    } else {
        return Ok(());
    };
    Err(super::invalid(field, reason))
}

/// The first component of `path` if a shell would have expanded it and the file system will
/// not: `~`, `~user`, `$VAR` or `${VAR}`. Only the first: further in, such a name is a name.
fn unexpanded(path: &Path) -> Option<String> {
    let first = path.components().next()?.as_os_str().to_str()?;
    let variable = first.strip_prefix('$').is_some_and(|name| {
        let name = name
            .strip_prefix('{')
            .and_then(|n| n.strip_suffix('}'))
            .unwrap_or(name);
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    (first.starts_with('~') || variable).then(|| first.to_owned())
}

/// Refuses a `local.file_mode` written in `text` as a decimal number (above 7, where decimal
/// and octal differ). TOML gives `0o644` and `420` as one integer, so the text is read again
/// for how it was written. A decimal mode is most often octal digits without their prefix
/// (`640`, `440`, `500`): from 384 to 511 they passed every other check and gave a mode no one
/// asked for (`500` is `0o764`, group-writable); the rare mode written on purpose in decimal
/// (`420` for `0o644`) cannot be told from them.
pub(super) fn check_mode_literal(text: &str) -> Result<()> {
    #[derive(Deserialize)]
    struct Probe {
        local: Option<ProbeLocal>,
    }
    #[derive(Deserialize)]
    struct ProbeLocal {
        file_mode: Option<toml::Spanned<toml::Value>>,
    }
    // Called once the whole text has parsed: a probe that does not has nothing to find.
    let Ok(probe) = toml::from_str::<Probe>(text) else {
        return Ok(());
    };
    let Some(written) = probe.local.and_then(|local| local.file_mode) else {
        return Ok(());
    };
    let (toml::Value::Integer(value), Some(raw)) = (written.get_ref(), text.get(written.span())) else {
        return Ok(());
    };
    let digits: String = raw
        .trim()
        .trim_start_matches('+')
        .chars()
        .filter(|&c| c != '_')
        .collect();
    let Ok(mode) = u32::try_from(*value) else {
        return Ok(());
    };
    if mode < 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(());
    }
    let write = |m: u32| format!("file_mode = 0o{m:o} or file_mode = \"0{m:o}\"");
    // Only a reading the bits check takes is offered: `644` was told to write `0o1204` too.
    let taken = |m: u32| crate::perms::check_mode_bits(m).is_ok();
    let read_as = format!("TOML reads {digits} as a decimal number, the mode {mode:#o}");
    let reason = match u32::from_str_radix(&digits, 8) {
        Ok(octal) if taken(octal) && taken(mode) => format!(
            "{read_as}, not as the octal digits {digits}: write {} for the mode {octal:#o}, or {} for {mode:#o}",
            write(octal),
            write(mode)
        ),
        Ok(octal) if taken(octal) => format!(
            "{read_as}, not as the octal digits {digits}: write {} for the mode {octal:#o}",
            write(octal)
        ),
        Ok(octal) if taken(mode) => format!(
            "{read_as}, not as the octal digits {digits} (as octal, refused: {}): write {} for {mode:#o}",
            crate::perms::check_mode_bits(octal).err().unwrap_or_default(),
            write(mode)
        ),
        Err(_) if taken(mode) => format!("{read_as}: write a mode in octal, {}", write(mode)),
        Ok(octal) => format!(
            "{read_as}, and as octal digits it would be {octal:#o}; neither is taken: {}; write a mode in octal, such as file_mode = 0o600",
            crate::perms::check_mode_bits(octal).err().unwrap_or_default()
        ),
        Err(_) => format!(
            "{read_as}, which is not taken: {}; write a mode in octal, such as file_mode = 0o600",
            crate::perms::check_mode_bits(mode).err().unwrap_or_default()
        ),
    };
    Err(super::invalid("local.file_mode", reason))
}

/// Serde for `local.file_mode`: an integer (TOML's `0o640`) or a string of octal digits
/// (`"0640"`, `"640"`, `"0o640"`). Written as such a string: as a number it would be written
/// in decimal, which [`check_mode_literal`] refuses.
mod mode {
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // the signature `serialize_with` asks for
    pub(super) fn serialize<S: Serializer>(mode: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match mode {
            Some(mode) => s.serialize_str(&format!("0{mode:o}")),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a file mode in octal, such as 0o640 or \"0640\"")]
    enum Mode {
        Number(u32),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match Option::<Mode>::deserialize(d)? {
            None => Ok(None),
            Some(Mode::Number(mode)) => Ok(Some(mode)),
            Some(Mode::Text(text)) => {
                let digits = text.strip_prefix("0o").unwrap_or(&text);
                u32::from_str_radix(digits, 8)
                    .ok()
                    .filter(|_| !digits.starts_with('+'))
                    .map(Some)
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!(
                            "{text:?} is not a mode in octal digits, such as \"0640\" or 0o640"
                        ))
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::CacheConfig;
    use crate::error::Error;

    fn file_mode_of(text: &str) -> Result<Option<u32>, (String, String)> {
        match CacheConfig::from_toml_str(&format!("[local]\n{text}\n")) {
            Ok(config) => Ok(config.local.file_mode),
            Err(Error::Config { field, reason }) => Err((field, reason)),
            Err(other) => Err(("not a config error".to_owned(), other.to_string())),
        }
    }

    /// TOML reads `420` as a decimal number, the mode 0o644, and `500` as 0o764: before, each of
    /// 384 to 511 (the decimal numbers that give the owner read and write) was taken silently,
    /// though `file_mode = 500` or `440` most likely meant those octal digits (found by review).
    #[test]
    fn a_file_mode_written_as_a_decimal_number_is_refused_saying_how_to_write_it_in_octal() {
        for (text, says) in [
            ("file_mode = 420", ["0o644", "\"0644\"", "0o420"]),
            ("file_mode = 511", ["0o777", "\"0777\"", "0o511"]),
            ("file_mode = 500", ["0o764", "\"0764\"", "0o500"]),
            ("file_mode = 384", ["0o600", "\"0600\"", "decimal"]),
            ("file_mode = 640", ["0o1200", "0o640", "\"0640\""]),
        ] {
            let (field, reason) = file_mode_of(text).expect_err(text);
            assert_eq!(field, "local.file_mode", "{text}");
            for said in says {
                assert!(reason.contains(said), "{text}: {reason:?} lacks {said}");
            }
        }
    }

    /// The refusal of a decimal mode offers both readings of its digits; `file_mode = 644`, the
    /// most common slip, was told to write `file_mode = 0o1204` "for 0o1204", and `9` to write
    /// `0o11`, modes the next check refuses (bits past 0o777, no owner read and write). Every
    /// `file_mode = …` a refusal offers must be taken; where neither reading is, it says why.
    #[test]
    fn a_decimal_file_mode_is_refused_offering_only_modes_that_are_taken() {
        for text in [
            "file_mode = 644",
            "file_mode = 755",
            "file_mode = 600",
            "file_mode = 444",
            "file_mode = 420",
            "file_mode = 9",
            "file_mode = 100",
        ] {
            let (field, reason) = file_mode_of(text).expect_err(text);
            assert_eq!(field, "local.file_mode", "{text}");
            let offered: Vec<&str> = reason
                .match_indices("file_mode = ")
                .filter_map(|(at, _)| reason[at..].split([' ', ',']).nth(2))
                .collect();
            for mode in &offered {
                let offer = format!("file_mode = {mode}");
                assert!(
                    file_mode_of(&offer).is_ok(),
                    "{text}: {reason:?} offers {offer}, refused"
                );
            }
            if offered.is_empty() {
                assert!(
                    reason.contains("owner"),
                    "{text}: {reason:?} says neither why nor what"
                );
            }
        }
        let (_, reason) = file_mode_of("file_mode = 644").unwrap_err();
        assert!(reason.contains("file_mode = 0o644"), "{reason}");
    }

    #[test]
    fn a_file_mode_written_in_octal_or_as_a_string_of_octal_digits_is_read_as_octal() {
        for text in [
            "file_mode = 0o640",
            "file_mode = \"0640\"",
            "file_mode = \"640\"",
            "file_mode = \"0o640\"",
        ] {
            assert_eq!(file_mode_of(text), Ok(Some(0o640)), "{text}");
        }
        for text in [
            "file_mode = \"0648\"",
            "file_mode = \"rw-r-----\"",
            "file_mode = \"\"",
        ] {
            let (field, reason) = file_mode_of(text).expect_err(text);
            assert_eq!(field, "local.file_mode", "{text}");
            assert!(reason.contains("0o640"), "{text}: {reason:?}");
        }
    }

    /// A mode with bits past 0o777 written in octal was told "TOML reads 2541 as decimal: write
    /// file_mode = 0o2541" (for 0o4755): no decimal number was written, and that mode is refused
    /// too (found by review). The literal check already speaks of decimal numbers.
    #[test]
    fn a_file_mode_with_bits_past_0o777_written_in_octal_gets_no_decimal_hint() {
        for text in [
            "file_mode = 0o4755",
            "file_mode = \"0o4755\"",
            "file_mode = \"4755\"",
            "file_mode = 0o1200",
        ] {
            let (field, reason) = file_mode_of(text).expect_err(text);
            assert_eq!(field, "local.file_mode", "{text}");
            assert!(reason.contains("bits outside 0o777"), "{text}: {reason}");
            assert!(!reason.contains("decimal"), "{text}: {reason}");
        }
    }

    /// A configuration written out and read back keeps its mode: written as a number, it would
    /// be the decimal number the reading refuses.
    #[test]
    fn a_file_mode_survives_a_round_trip_through_toml() {
        let mut config = CacheConfig::default();
        config.local.file_mode = Some(0o640);
        let text = toml::to_string(&config).unwrap();
        assert_eq!(CacheConfig::from_toml_str(&text).unwrap(), config, "{text}");
    }
}

#[cfg(test)]
mod map_reads_tests {
    use crate::config::CacheConfig;
    use crate::error::Error;
    use crate::MapReads;

    #[test]
    fn map_reads_is_read_from_toml_and_an_unknown_value_is_refused_naming_the_field() {
        let read = |text: &str| CacheConfig::from_toml_str(&format!("[local]\n{text}\n"));
        assert_eq!(read("").unwrap().local.map_reads, MapReads::Auto);
        for (text, reads) in [
            ("map_reads = \"auto\"", MapReads::Auto),
            ("map_reads = \"around\"", MapReads::Around),
            ("map_reads = \"random\"", MapReads::Random),
        ] {
            assert_eq!(read(text).unwrap().local.map_reads, reads, "{text}");
        }
        match read("map_reads = \"sometimes\"") {
            Err(Error::Config { field, reason }) => {
                assert_eq!(field, "local.map_reads");
                assert!(reason.contains("random"), "{reason}");
            }
            other => panic!("expected a Config error naming local.map_reads, got {other:?}"),
        }
    }
}
