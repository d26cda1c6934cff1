//! The cgroup lifecycle family: `ks_cgroup_mkdir` and `ks_cgroup_rmdir` stream each cgroup
//! created or removed through a ring buffer; `CgroupEventReader` decodes them for the index.

use aya::{
    Btf, Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use kernsight_common::cgroups::{
    CGROUP_EVENTS_LOST_MAP, CGROUP_EVENTS_MAP, CGROUP_MKDIR, CGROUP_PATH_MAX, CGROUP_RMDIR, CgroupEvent,
};

use super::{ProbeState, ProbeStatus, load_and_attach, take_map};

pub const PROBE: &str = "cgroups";
const PROGRAMS: [(&str, &str); 2] =
    [("ks_cgroup_mkdir", "cgroup_mkdir"), ("ks_cgroup_rmdir", "cgroup_rmdir")];

pub fn status(state: ProbeState) -> ProbeStatus {
    ProbeStatus {
        name: PROBE,
        programs: PROGRAMS.iter().map(|(p, _)| *p).collect(),
        program_ids: Vec::new(),
        state,
    }
}

/// A decoded lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    Created { hierarchy_id: u32, cgroup_id: u64, path: Option<String> },
    Removed { hierarchy_id: u32, cgroup_id: u64 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("cgroup event of {0} bytes, expected {1}")]
    Size(usize, usize),
    #[error("cgroup event of unknown kind {0}")]
    Kind(u32),
}

/// Decodes one ring-buffer record; never trusts its length, kind or path.
pub fn decode(record: &[u8]) -> Result<Lifecycle, DecodeError> {
    let expected = size_of::<CgroupEvent>();
    if record.len() < expected {
        return Err(DecodeError::Size(record.len(), expected));
    }
    // SAFETY: length checked; CgroupEvent is plain integers and bytes, read unaligned.
    let event: CgroupEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let (hierarchy_id, cgroup_id) = (event.hierarchy_id, event.cgroup_id);
    match event.kind {
        CGROUP_MKDIR => {
            // A path that filled the buffer may be cut: leave it to a walk of the hierarchy.
            let len = event.path_len as usize;
            let path = (1..CGROUP_PATH_MAX)
                .contains(&len)
                .then(|| event.path.get(..len - 1))
                .flatten()
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .filter(|p| p.starts_with('/'))
                .map(str::to_owned);
            Ok(Lifecycle::Created { hierarchy_id, cgroup_id, path })
        }
        CGROUP_RMDIR => Ok(Lifecycle::Removed { hierarchy_id, cgroup_id }),
        other => Err(DecodeError::Kind(other)),
    }
}

/// The ring buffer and its loss counter.
pub struct CgroupEventReader {
    pub ring: RingBuf<MapData>,
    pub lost: LostCounter,
}

/// Events the kernel side could not queue (ring buffer full); clones read the same counter.
#[derive(Clone)]
pub struct LostCounter(std::sync::Arc<PerCpuArray<MapData, u64>>);

impl std::fmt::Debug for LostCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LostCounter").field(&self.total()).finish()
    }
}

impl LostCounter {
    pub fn new(counter: PerCpuArray<MapData, u64>) -> Self {
        Self(std::sync::Arc::new(counter))
    }

    /// Summed over CPUs.
    pub fn total(&self) -> u64 {
        self.0.get(&0, 0).map(|values| values.iter().sum()).unwrap_or(0)
    }
}

pub fn attach(ebpf: &mut Ebpf, btf: &Btf) -> anyhow::Result<CgroupEventReader> {
    let ring = RingBuf::try_from(take_map(ebpf, CGROUP_EVENTS_MAP)?)?;
    let lost = PerCpuArray::try_from(take_map(ebpf, CGROUP_EVENTS_LOST_MAP)?)?;
    load_and_attach(ebpf, btf, &PROGRAMS)?;
    Ok(CgroupEventReader { ring, lost: LostCounter::new(lost) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u32, path: &[u8], path_len: u32) -> Vec<u8> {
        let mut event = CgroupEvent {
            kind,
            hierarchy_id: 4,
            cgroup_id: 77,
            path_len,
            _pad: 0,
            path: [0; CGROUP_PATH_MAX],
        };
        event.path[..path.len()].copy_from_slice(path);
        // SAFETY: plain-data struct viewed as bytes.
        unsafe { std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<CgroupEvent>()) }
            .to_vec()
    }

    #[test]
    fn decodes_mkdir_and_rmdir() {
        let created = decode(&record(CGROUP_MKDIR, b"/kubepods/pod1\0", 15)).unwrap();
        assert_eq!(
            created,
            Lifecycle::Created { hierarchy_id: 4, cgroup_id: 77, path: Some("/kubepods/pod1".into()) }
        );
        let removed = decode(&record(CGROUP_RMDIR, b"", 0)).unwrap();
        assert_eq!(removed, Lifecycle::Removed { hierarchy_id: 4, cgroup_id: 77 });
    }

    #[test]
    fn hostile_records_are_errors_or_pathless_never_panics() {
        assert_eq!(decode(&[0; 10]), Err(DecodeError::Size(10, size_of::<CgroupEvent>())));
        assert_eq!(decode(&record(9, b"", 0)), Err(DecodeError::Kind(9)));
        // Truncated path (buffer full), bogus lengths, invalid UTF-8, relative path: no path.
        for (path, len) in [
            (&[b'a'; CGROUP_PATH_MAX][..], CGROUP_PATH_MAX as u32),
            (b"/x\0", 9999),
            (b"\xff\xfe\0", 3),
            (b"rel\0", 4),
        ] {
            let Lifecycle::Created { path, .. } = decode(&record(CGROUP_MKDIR, path, len)).unwrap() else {
                panic!()
            };
            assert_eq!(path, None);
        }
        for cut in 0..size_of::<CgroupEvent>() {
            let _ = decode(&record(CGROUP_MKDIR, b"/a\0", 3)[..cut]);
        }
    }

    proptest::proptest! {
        /// Records come from the kernel, but the decoder trusts nothing: any bytes, any length.
        #[test]
        fn no_bytes_panic_the_decoder(record in proptest::collection::vec(proptest::num::u8::ANY, 0..3 * size_of::<CgroupEvent>())) {
            let _ = decode(&record);
        }

        /// A record cut short is an error (counted by the reader), never a partial event.
        #[test]
        fn truncated_records_are_errors(record in proptest::collection::vec(proptest::num::u8::ANY, size_of::<CgroupEvent>()), cut in 0..size_of::<CgroupEvent>()) {
            proptest::prop_assert!(decode(&record[..cut]).is_err());
        }
    }
}
