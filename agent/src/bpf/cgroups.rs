//! The cgroup lifecycle family: `ks_cgroup_mkdir` and `ks_cgroup_rmdir` stream each cgroup
//! created or removed through a ring buffer; `CgroupEventReader` decodes them for the index.

use kernsight_common::cgroups::{
    CGROUP_EVENTS_LOST_MAP, CGROUP_EVENTS_MAP, CGROUP_MKDIR, CGROUP_PATH_MAX, CGROUP_RMDIR, CgroupEvent,
};

use super::{
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, attached_any},
    load_and_attach,
    rings::EventRing,
};
use crate::config::Config;

pub const PROBE: &str = "cgroups";
const PROGRAMS: [(&str, &str); 2] =
    [("ks_cgroup_mkdir", "cgroup_mkdir"), ("ks_cgroup_rmdir", "cgroup_rmdir")];

/// The cgroup lifecycle family: always on (it keeps the cgroup index current).
pub struct CgroupLifecycle;

impl Family for CgroupLifecycle {
    fn name(&self) -> &'static str {
        PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        PROGRAMS.iter().map(|(p, _)| *p).collect()
    }

    fn enabled(&self, _config: &Config) -> bool {
        true
    }

    fn maps(&self) -> &'static [&'static str] {
        &[CGROUP_EVENTS_MAP, CGROUP_EVENTS_LOST_MAP]
    }

    fn set_enabled(&self, _config: &mut Config, _on: bool) {}

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        facts.walk.as_ref().err().map(|err| format!("cannot find a cgroup's hierarchy: {err}"))
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let events = EventRing::take(cx.ebpf, "cgroup_events", CGROUP_EVENTS_MAP, CGROUP_EVENTS_LOST_MAP)?;
        load_and_attach(cx.ebpf, cx.btf, &PROGRAMS)?;
        Ok(Box::new(CgroupEvents(Some(events))))
    }
}

/// The attached family: its ring, until the index's task takes it.
struct CgroupEvents(Option<EventRing>);

impl Attached for CgroupEvents {
    attached_any!();

    fn take_events(&mut self) -> Option<EventRing> {
        self.0.take()
    }
}

/// A decoded lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// `path`: the raw bytes of the path relative to the hierarchy's root (any bytes but NUL: a
    /// label is made of them with `cgroupfs::path_label`), or `None` when the kernel cut it.
    Created {
        hierarchy_id: u32,
        cgroup_id: u64,
        path: Option<Vec<u8>>,
    },
    Removed {
        hierarchy_id: u32,
        cgroup_id: u64,
    },
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
            // A path that filled the buffer may be cut: the agent looks that id up instead.
            // Bytes that are not UTF-8 are a name like any other (escaped in its label).
            let len = event.path_len as usize;
            let path = (1..CGROUP_PATH_MAX)
                .contains(&len)
                .then(|| event.path.get(..len - 1))
                .flatten()
                .filter(|p| p.starts_with(b"/") && !p.contains(&0))
                .map(<[u8]>::to_vec);
            Ok(Lifecycle::Created { hierarchy_id, cgroup_id, path })
        }
        CGROUP_RMDIR => Ok(Lifecycle::Removed { hierarchy_id, cgroup_id }),
        other => Err(DecodeError::Kind(other)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn record(kind: u32, path: &[u8], path_len: u32) -> Vec<u8> {
        record_of(kind, 4, 77, path, path_len)
    }

    /// The bytes of a lifecycle record as the kernel program writes it.
    pub(crate) fn record_of(
        kind: u32,
        hierarchy_id: u32,
        cgroup_id: u64,
        path: &[u8],
        path_len: u32,
    ) -> Vec<u8> {
        let mut event =
            CgroupEvent { kind, hierarchy_id, cgroup_id, path_len, _pad: 0, path: [0; CGROUP_PATH_MAX] };
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
            Lifecycle::Created { hierarchy_id: 4, cgroup_id: 77, path: Some(b"/kubepods/pod1".to_vec()) }
        );
        // Not UTF-8: still a path (its label escapes the bytes), never a reason to walk.
        let odd = decode(&record(CGROUP_MKDIR, b"/t/\xff\xfe\0", 6)).unwrap();
        assert_eq!(
            odd,
            Lifecycle::Created { hierarchy_id: 4, cgroup_id: 77, path: Some(b"/t/\xff\xfe".to_vec()) }
        );
        let removed = decode(&record(CGROUP_RMDIR, b"", 0)).unwrap();
        assert_eq!(removed, Lifecycle::Removed { hierarchy_id: 4, cgroup_id: 77 });
    }

    #[test]
    fn hostile_records_are_errors_or_pathless_never_panics() {
        assert_eq!(decode(&[0; 10]), Err(DecodeError::Size(10, size_of::<CgroupEvent>())));
        assert_eq!(decode(&record(9, b"", 0)), Err(DecodeError::Kind(9)));
        // Truncated path (buffer full), bogus lengths, relative paths, a NUL inside: no path.
        for (path, len) in [
            (&[b'a'; CGROUP_PATH_MAX][..], CGROUP_PATH_MAX as u32),
            (b"/x\0", 9999),
            (b"\xff\xfe\0", 3),
            (b"rel\0", 4),
            (b"/a\0b\0", 5),
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
