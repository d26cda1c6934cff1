//! Just enough of a BTF reader (Documentation/bpf/btf.rst) to find where a struct member lives
//! in the running kernel: the kernel programs walk `current->cgroups->dfl_cgrp->kn->id` with
//! offsets that the agent reads here and hands them as read-only constants (CO-RE done in user
//! space, since the Rust eBPF toolchain has no field relocations).

use std::collections::{HashMap, HashSet};

/// Where the kernel publishes its own type information, needed by BTF-typed programs.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;
const KIND_PTR: u32 = 2;
const KIND_FUNC_PROTO: u32 = 13;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("cannot read kernel BTF: {0}")]
    Read(String),
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {0} has no member {1}")]
    NoMember(String, String),
    #[error("kernel BTF has no enum value {0}")]
    NoEnumValue(String),
}

#[derive(Debug)]
struct Type {
    kind: u32,
    name: u32,
    /// The type a pointer or typedef refers to; the parameter count of a function prototype.
    refers: u32,
    /// (name offset, type id, bit offset) for struct and union members,
    /// (name offset, value, 0) for enum values.
    members: Vec<(u32, u32, u32)>,
}

#[derive(Debug)]
pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is the implicit `void`.
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
    /// Enumerator name → value, over every enum (kernel enumerator names are unique).
    enum_values: HashMap<String, u32>,
    /// Names of typedefs (`btf_trace_<tracepoint>` says a BTF tracepoint exists) and functions
    /// (what fentry and fexit can attach to).
    typedefs: HashMap<String, u32>,
    functions: HashSet<String>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    let bytes = data.get(at..at + 4).ok_or(BtfError::Malformed("truncated"))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let data = std::fs::read(KERNEL_BTF).map_err(|e| BtfError::Read(e.to_string()))?;
        Self::parse(&data)
    }

    /// Parses little-endian BTF (the only byte order of the architectures kernsight supports).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if magic != Some(MAGIC) {
            return Err(BtfError::Malformed("bad magic"));
        }
        let header_len = u32_at(data, 4)? as usize;
        let [type_off, type_len, str_off, str_len] =
            [8, 12, 16, 20].map(|at| u32_at(data, at).map(|v| v as usize));
        let (type_off, type_len, str_off, str_len) = (type_off?, type_len?, str_off?, str_len?);
        let section = |off: usize, len: usize| {
            let start = header_len.checked_add(off).ok_or(BtfError::Malformed("offset overflow"))?;
            data.get(start..start.checked_add(len).ok_or(BtfError::Malformed("length overflow"))?)
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        let type_data = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();

        let mut types = vec![Type { kind: 0, name: 0, refers: 0, members: Vec::new() }];
        let mut at = 0;
        while at < type_data.len() {
            let name = u32_at(type_data, at)?;
            let info = u32_at(type_data, at + 4)?;
            let size_or_type = u32_at(type_data, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // int, var, decl_tag
                3 => 12,          // array
                4 | 5 => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(type_data, m + 8)?;
                        let bits = if kind_flag { offset & 0x00ff_ffff } else { offset };
                        members.push((u32_at(type_data, m)?, u32_at(type_data, m + 4)?, bits));
                    }
                    vlen * 12
                }
                KIND_ENUM => {
                    for i in 0..vlen {
                        let m = at + i * 8;
                        members.push((u32_at(type_data, m)?, u32_at(type_data, m + 4)?, 0));
                    }
                    vlen * 8
                }
                13 => vlen * 8,            // func_proto
                15 | 19 => vlen * 12,      // datasec, enum64
                2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, modifiers, func, float, type_tag
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            at += extra;
            let refers = match kind {
                KIND_FUNC_PROTO => vlen as u32,
                _ => size_or_type,
            };
            types.push(Type { kind, name, refers, members });
        }

        let mut btf = Self {
            strings,
            types,
            structs_by_name: HashMap::new(),
            enum_values: HashMap::new(),
            typedefs: HashMap::new(),
            functions: HashSet::new(),
        };
        let mut structs = HashMap::new();
        let mut enum_values = HashMap::new();
        let mut typedefs = HashMap::new();
        let mut functions = HashSet::new();
        for (id, ty) in btf.types.iter().enumerate() {
            match ty.kind {
                KIND_TYPEDEF => _ = typedefs.insert(btf.string(ty.name).to_owned(), ty.refers),
                KIND_FUNC => _ = functions.insert(btf.string(ty.name).to_owned()),
                _ => {}
            }
            if ty.kind == KIND_STRUCT && ty.name != 0 {
                structs.entry(btf.string(ty.name).to_owned()).or_insert(id as u32);
            }
            if ty.kind == KIND_ENUM {
                for &(name, value, _) in &ty.members {
                    enum_values.entry(btf.string(name).to_owned()).or_insert(value);
                }
            }
        }
        btf.structs_by_name = structs;
        btf.enum_values = enum_values;
        btf.typedefs = typedefs;
        btf.functions = functions;
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let tail = self.strings.get(offset as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    /// The value of an enumerator, e.g. `memory_cgrp_id` (which depends on the kernel's config).
    pub fn enum_value(&self, name: &str) -> Result<u32, BtfError> {
        self.enum_values.get(name).copied().ok_or_else(|| BtfError::NoEnumValue(name.into()))
    }

    /// Whether the kernel has the BTF tracepoint `name` (`tp_btf/<name>` can attach): BTF then has
    /// the typedef `btf_trace_<name>`.
    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.typedefs.contains_key(&format!("btf_trace_{name}"))
    }

    /// How many arguments the BTF tracepoint `name` passes its programs (its prototype
    /// `btf_trace_<name>` minus the leading `void *`); `None` if the kernel has no such
    /// tracepoint. (`sched_switch` gained `prev_state` in 5.18, for instance.)
    pub fn tracepoint_args(&self, name: &str) -> Option<u32> {
        let typedef = *self.typedefs.get(&format!("btf_trace_{name}"))?;
        let pointer = self.types.get(typedef as usize).filter(|ty| ty.kind == KIND_PTR)?;
        let prototype = self.types.get(pointer.refers as usize).filter(|ty| ty.kind == KIND_FUNC_PROTO)?;
        prototype.refers.checked_sub(1)
    }

    /// Whether the kernel has the function `name` in its BTF (fentry and fexit can attach).
    pub fn has_function(&self, name: &str) -> bool {
        self.functions.contains(name)
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous structs and unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self.structs_by_name.get(name).ok_or_else(|| BtfError::NoStruct(name.into()))?;
        self.find_member(id, member, 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember(name.into(), member.into()))
    }

    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let ty = self.types.get(id as usize)?;
        if depth > 8 || !(ty.kind == KIND_STRUCT || ty.kind == KIND_UNION) {
            return None;
        }
        for &(name, type_id, bits) in &ty.members {
            if name != 0 && self.string(name) == member {
                return Some(bits);
            }
            if name == 0
                && let Some(inner) = self.find_member(type_id, member, depth + 1)
            {
                return Some(bits + inner);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF with `struct outer { int a; union { long b; }; }` (int 4 bytes, b at byte 8).
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0long\0ids\0first_id\0second_id\0".to_vec();
        let words: Vec<u32> = vec![
            1,
            (1 << 24),
            4,
            0x20, // [1] int, size 4, encoding
            15,
            (1 << 24),
            8,
            0x40, // [2] long
            0,
            (5 << 24) | 1,
            8,
            13,
            2,
            0, // [3] anonymous union { long b at 0 }
            5,
            (4 << 24) | 2,
            16,
            11,
            1,
            0,
            0,
            3,
            64, // [4] struct outer { a at 0; union at bit 64 }
        ];
        let types: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]); // version, flags
        for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", "a"), Ok(0));
        assert_eq!(btf.member_offset("outer", "b"), Ok(8));
        assert_eq!(btf.member_offset("outer", "c"), Err(BtfError::NoMember("outer".into(), "c".into())));
        assert_eq!(btf.member_offset("inner", "a"), Err(BtfError::NoStruct("inner".into())));
    }

    #[test]
    fn truncated_or_corrupt_input_is_an_error_not_a_panic() {
        let data = sample();
        for len in 0..data.len() {
            let _ = Btf::parse(&data[..len]);
        }
        let mut corrupt = data.clone();
        corrupt[12] = 0xff; // type_len far past the end
        assert!(Btf::parse(&corrupt).is_err());
    }

    #[test]
    fn reads_the_running_kernel() {
        if !std::path::Path::new(KERNEL_BTF).exists() {
            assert!(
                std::env::var_os("KERNSIGHT_PRIVILEGED_TESTS").is_none(),
                "no kernel BTF on this machine"
            );
            eprintln!("skipped: no kernel BTF on this machine");
            return;
        }
        let btf = Btf::from_sys_fs().unwrap();
        assert!(btf.member_offset("task_struct", "cgroups").unwrap() > 0);
        assert!(btf.member_offset("css_set", "dfl_cgrp").is_ok());
        assert!(btf.member_offset("cgroup", "kn").is_ok());
        assert!(btf.member_offset("kernfs_node", "id").is_ok());
        assert!(btf.member_offset("css_set", "subsys").is_ok());
        assert_eq!(btf.member_offset("cgroup_subsys_state", "cgroup"), Ok(0));
        assert!(btf.enum_value("memory_cgrp_id").is_ok());
        assert!(btf.has_tracepoint("sched_switch"));
        assert!(!btf.has_tracepoint("no_such_tracepoint"));
        // sched_switch(bool preempt, prev, next, unsigned int prev_state) since 5.18.
        assert_eq!(btf.tracepoint_args("sched_switch"), Some(4));
        assert_eq!(btf.tracepoint_args("no_such_tracepoint"), None);
        assert!(btf.has_function("cap_capable"));
        assert!(!btf.has_function("no_such_function"));
    }

    proptest::proptest! {
        /// BTF is read from the kernel; a corrupt blob must be an error, not a panic or a hang.
        #[test]
        fn no_corruption_of_valid_btf_panics(at in 0..200usize, byte in proptest::num::u8::ANY, len in 0..200usize) {
            let mut data = sample();
            let at = at % data.len();
            data[at] = byte;
            data.truncate(len.max(at + 1));
            if let Ok(btf) = Btf::parse(&data) {
                let _ = btf.member_offset("outer", "b");
                let _ = btf.enum_value("first_id");
            }
        }

        #[test]
        fn no_bytes_panic_the_btf_parser(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = Btf::parse(&data);
        }
    }
}
