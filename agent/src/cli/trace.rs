//! `kernsight trace <exec | exit | open | syscall | io | dns | tcp | drop | oom | cap | signal |
//! tracepoint:<category>:<name>>`: events filtered in the kernel by process, cgroup and syscall
//! set, then by `--where`; printed, or aggregated with `--count-by`, `--sum`, `--hist`.

use std::{collections::BTreeSet, io::IsTerminal as _, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};

use crate::kernel::value::{Kind, Name};
use crate::{
    bpf::trace::{Filters, Source, Trace},
    kernel::{cgroupfs::Hierarchies, names::did_you_mean, preflight, tracefs::Format},
    metadata::{cri, identity::Resolver, lookup},
    trace::{
        aggregate::{Aggregator, Spec},
        enrich::{self, Enricher, WorkloadFilter},
        filter::{self, Expr, Literal, Op},
        presets,
        record::{Decoder, RecordDecoder},
        session::{self, Format as OutputFormat, Sink},
        syscall_args,
    },
};

const TYPED: [&str; 12] =
    ["exec", "exit", "open", "syscall", "escape", "io", "dns", "tcp", "drop", "oom", "cap", "signal"];

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// exec, exit, open, syscall, escape, io, dns, tcp, drop, oom, cap, signal, or
    /// tracepoint:<category>:<name>.
    target: String,
    /// For `syscall`: the syscalls to trace, by name (all when none).
    syscalls: Vec<String>,
    /// Only this process (its thread group id).
    #[arg(long)]
    pid: Option<u32>,
    /// Only processes whose command name matches (a glob: `nginx*`).
    #[arg(long)]
    comm: Option<String>,
    /// Only this cgroup and those below it: a directory of a cgroup hierarchy, or a path
    /// relative to the unified hierarchy's root.
    #[arg(long)]
    cgroup: Option<String>,
    /// Only this container (name or id prefix).
    #[arg(long)]
    container: Option<String>,
    /// Only the containers of this pod.
    #[arg(long)]
    pod: Option<String>,
    /// Only the containers of the pods of this workload (a Deployment's, StatefulSet's, ...
    /// name, as the `workload` label has it).
    #[arg(long)]
    workload: Option<String>,
    /// The CRI socket that names containers and pods (default: the first of containerd's and
    /// CRI-O's usual sockets that exists).
    #[arg(long, value_name = "PATH")]
    cri_socket: Option<PathBuf>,
    /// Only the containers of pods in this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only events for which this expression holds: `ret < 0 && comm == "nginx*"`.
    #[arg(long = "where", value_name = "EXPR")]
    where_: Option<String>,
    /// Count events by these fields (comma-separated) instead of printing them.
    #[arg(long, value_delimiter = ',', value_name = "FIELD[,FIELD]")]
    count_by: Vec<String>,
    /// Draw a log2 histogram of this numeric field (per --count-by key, if given).
    #[arg(long, value_name = "FIELD")]
    hist: Option<String>,
    /// Sum this numeric field (per --count-by key, if given).
    #[arg(long, value_name = "FIELD")]
    sum: Option<String>,
    /// Print only the N largest rows of an aggregation.
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    /// Print (and reset) aggregations and the loss count every DURATION (`1s`, `500ms`).
    #[arg(long, value_parser = crate::duration::parse, value_name = "DURATION")]
    interval: Option<Duration>,
    /// Stop after DURATION (default: at Ctrl-C).
    #[arg(long, value_parser = crate::duration::parse, value_name = "DURATION")]
    duration: Option<Duration>,
    /// Output: an aligned table, or one JSON object per line.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, default_value_t = 8, value_name = "MIB")]
    buffer_mib: u32,
    /// Where tracefs is mounted (mounted there when missing).
    #[arg(long, default_value = "/sys/kernel/tracing")]
    tracefs: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

/// The fields every decoded event starts with (time_ns, pid, tid, comm, cgroup_id).
const LEADING_FIELDS: usize = 5;

/// The columns every trace starts with.
const LEADING: [&str; 5] = ["time", "pid", "comm", "container", "pod"];

struct Plan {
    source: Source,
    decoder: Decoder,
    columns: Vec<String>,
    added: Vec<(&'static str, Kind)>,
    adjust: fn(&mut crate::kernel::value::Event),
}

fn columns(rest: &[&str]) -> Vec<String> {
    LEADING.iter().chain(rest).map(|c| (*c).to_owned()).collect()
}

/// An aggregation the kernel makes, for `trace syscall` with only kernel-side filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InKernel {
    /// Calls per syscall (`--count-by syscall`).
    Counts,
    /// Log2 latency histograms per syscall (`--hist latency_ns [--count-by syscall]`).
    Latency,
    /// Calls per cgroup and syscall (`--count-by` over syscall and the cgroup's identity).
    ByCgroup,
}

/// Fields a count by (cgroup, syscall) can be grouped by.
const CGROUP_KEYS: [&str; 8] =
    ["cgroup", "cgroup_id", "container", "pod", "namespace", "workload_kind", "workload", "node"];

/// `kernel`: the aggregation made in the kernel, if any.
fn plan(args: &TraceArgs, kernel: Option<InKernel>) -> anyhow::Result<Plan> {
    let target = args.target.as_str();
    if !args.syscalls.is_empty() && target != "syscall" {
        bail!("only `trace syscall` takes syscall names (got {:?} after {target})", args.syscalls);
    }
    // The source and the format it is decoded with.
    let tracepoint = |category: &str, name: &str| -> anyhow::Result<(Source, Format)> {
        let format = Format::read(&args.tracefs, category, name)?;
        let source = Source::Tracepoint {
            category: category.to_owned(),
            name: name.to_owned(),
            format: format.clone(),
        };
        Ok((source, format))
    };
    let plan = match target {
        "exec" | "exit" => Plan {
            source: Source::Processes,
            decoder: Decoder::Processes,
            columns: if target == "exec" {
                columns(&["ppid", "uid", "filename", "argv"])
            } else {
                columns(&["ppid", "exit_code", "how"])
            },
            added: Vec::new(),
            adjust: |_| {},
        },
        "io" => Plan {
            source: Source::BlockIo,
            decoder: Decoder::BlockIo,
            columns: columns(&["device", "device_name", "op", "bytes", "latency_ns", "error"]),
            added: Vec::new(),
            adjust: |_| {},
        },
        "dns" => {
            if args.pid.is_some() || args.comm.is_some() {
                bail!(
                    "`trace dns` cannot filter by --pid or --comm: packets carry no process; use --cgroup, --container, --pod, --workload or --namespace"
                );
            }
            Plan {
                source: Source::Dns,
                decoder: Decoder::Dns,
                // No pid or comm: a packet has a socket's cgroup, not a process.
                columns: [
                    "time",
                    "container",
                    "pod",
                    "kind",
                    "name",
                    "qtype",
                    "rcode",
                    "latency_ns",
                    "server",
                    "protocol",
                ]
                .map(str::to_owned)
                .to_vec(),
                added: Vec::new(),
                adjust: |_| {},
            }
        }
        "escape" => Plan {
            source: Source::Syscalls {
                set: presets::escape_syscalls().map(|nr| (nr, syscall_args::path_argument(nr))).collect(),
            },
            decoder: Decoder::Syscalls,
            columns: columns(&["syscall", "vector", "ret", "errno", "args"]),
            added: vec![("vector", Kind::Text)],
            adjust: presets::escape_vector,
        },
        "syscall" | "open" => {
            let numbers = if target == "open" {
                ["open", "openat", "openat2", "creat"].iter().filter_map(|n| syscall_number(n).ok()).collect()
            } else if args.syscalls.is_empty() {
                (0..kernsight_common::trace::TRACE_SYSCALLS as u32).collect()
            } else {
                args.syscalls
                    .iter()
                    .flat_map(|s| s.split(','))
                    .map(syscall_number)
                    .collect::<Result<Vec<_>, _>>()?
            };
            let source = if let Some(aggregation) = kernel {
                Source::SyscallCounts {
                    set: numbers,
                    latency: aggregation == InKernel::Latency,
                    by_cgroup: aggregation == InKernel::ByCgroup,
                }
            } else {
                Source::Syscalls {
                    set: numbers.iter().map(|&nr| (nr, syscall_args::path_argument(nr))).collect(),
                }
            };
            let rest: &[&str] = if target == "open" {
                &["ret", "errno", "latency_ns", "path"]
            } else {
                &["syscall", "ret", "errno", "latency_ns", "args"]
            };
            Plan {
                source,
                decoder: Decoder::Syscalls,
                columns: columns(rest),
                added: Vec::new(),
                adjust: |_| {},
            }
        }
        _ => {
            if let Some(spec) = target.strip_prefix("tracepoint:") {
                let Some((category, name)) = spec.split_once(':') else {
                    bail!(
                        "`{target}`: write tracepoint:<category>:<name>, e.g. tracepoint:sched:sched_process_fork"
                    );
                };
                let (source, format) = tracepoint(category, name)?;
                let decoder = Decoder::Tracepoint(format.clone());
                // Columns: every field of the record (named as the decoder names them).
                let rest: Vec<String> = RecordDecoder::new(Decoder::Tracepoint(format.clone()))
                    .schema()
                    .into_iter()
                    .skip(LEADING_FIELDS)
                    .map(|(n, _)| n.to_string())
                    .collect();
                let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
                Plan { source, decoder, columns: columns(&rest), added: Vec::new(), adjust: |_| {} }
            } else if let Some(preset) = presets::find(target) {
                let (source, format) = tracepoint(preset.category, preset.event)?;
                let decoder = Decoder::Tracepoint(format.clone());
                Plan {
                    source,
                    decoder,
                    columns: columns(preset.columns),
                    added: preset.added.to_vec(),
                    adjust: preset.adjust,
                }
            } else {
                bail!(
                    "unknown trace `{target}`{}: use one of {} or tracepoint:<category>:<name>",
                    did_you_mean(target, &TYPED),
                    TYPED.join(", ")
                );
            }
        }
    };
    Ok(plan)
}

fn syscall_number(name: &str) -> anyhow::Result<u32> {
    match name.parse::<syscalls::Sysno>() {
        Ok(sysno) => Ok(sysno.id() as u32),
        Err(_) => {
            let known: Vec<&str> = syscalls::Sysno::iter().map(|s| s.name()).collect();
            bail!("unknown syscall `{name}`{}", did_you_mean(name, &known))
        }
    }
}

pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    let spec =
        Spec { by: args.count_by.clone(), sum: args.sum.clone(), hist: args.hist.clone(), top: args.top };
    // With only kernel-side filters, counts by syscall and latency histograms (overall or by
    // syscall) are made in the kernel: no event crosses the ring buffer.
    let kernel_filters_only = args.target == "syscall" && args.where_.is_none() && args.comm.is_none();
    let by_syscall_or_none = spec.by.is_empty() || spec.by == ["syscall"];
    let by_cgroup = !spec.by.is_empty()
        && spec.by.iter().all(|f| f == "syscall" || CGROUP_KEYS.contains(&f.as_str()))
        && spec.by.iter().any(|f| CGROUP_KEYS.contains(&f.as_str()));
    let kernel = match (&spec.hist, &spec.sum) {
        _ if !kernel_filters_only => None,
        (None, None) if spec.by == ["syscall"] => Some(InKernel::Counts),
        (None, None) if by_cgroup => Some(InKernel::ByCgroup),
        (Some(field), None) if by_syscall_or_none && field == "latency_ns" => Some(InKernel::Latency),
        _ => None,
    };
    if args.buffer_mib == 0 || !args.buffer_mib.is_power_of_two() || args.buffer_mib > 1024 {
        bail!("--buffer-mib {}: give a power of two from 1 to 1024", args.buffer_mib);
    }
    // Privileges first: without them tracefs, where tracepoints are looked up, is unreadable.
    preflight::check_privileges()?;
    preflight::raise_memlock_limit();
    preflight::ensure_mounts(&args.tracefs, &crate::config::PathsConfig::default().bpffs);
    let plan = plan(&args, kernel)?;
    let decoder = RecordDecoder::new(plan.decoder);
    let mut schema = decoder.schema();
    schema.extend(enrich::FIELDS.iter().chain(&plan.added).map(|(n, k)| (Name::from(*n), *k)));
    let fields: Vec<(&str, Kind)> = schema.iter().map(|(n, k)| (&**n, *k)).collect();
    let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    let mut filter = match &args.where_ {
        Some(text) => {
            let expr = filter::parse(text)?;
            filter::check(text, &expr, &fields)?;
            Some(expr)
        }
        None => None,
    };
    if args.target == "escape" {
        // Forks, FIFOs and PTRACE_TRACEME share the syscalls of the vectors: not shown.
        let field = filter::Field { name: "vector".into(), offset: 0 };
        let vectors = Expr::Compare { field, op: Op::Ne, literal: Literal::Text("-".into()) };
        filter = Some(match filter {
            Some(other) => Expr::And(Box::new(vectors), Box::new(other)),
            None => vectors,
        });
    }
    if matches!(args.target.as_str(), "exec" | "exit") {
        let field = filter::Field { name: "event".into(), offset: 0 };
        let kind = Expr::Compare { field, op: Op::Eq, literal: Literal::Text(args.target.clone()) };
        filter = Some(match filter {
            Some(other) => Expr::And(Box::new(kind), Box::new(other)),
            None => kind,
        });
    }
    if let Some(comm) = &args.comm {
        let field = filter::Field { name: "comm".into(), offset: 0 };
        let by_comm = Expr::Compare { field, op: Op::Eq, literal: Literal::Text(comm.clone()) };
        filter = Some(match filter {
            Some(other) => Expr::And(Box::new(by_comm), Box::new(other)),
            None => by_comm,
        });
    }
    for field in spec.fields() {
        if !names.contains(&field) {
            bail!(
                "unknown field `{field}`{}: this trace has {}",
                did_you_mean(field, &names),
                names.join(", ")
            );
        }
    }

    let hierarchies = Hierarchies::detect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let resolver = Arc::new(
            Resolver::new(false, Vec::new(), 4096).with_node(std::env::var("NODE_NAME").unwrap_or_default()),
        );
        tokio::spawn(lookup::run(
            resolver.clone(),
            lookup::CriSockets::new(&args.cri_socket.clone().unwrap_or_default(), &cri::default_sockets()),
        ));
        let mut enricher = Enricher::new(&hierarchies, resolver);
        let mut cgroups: Option<BTreeSet<u64>> = None;
        if let Some(path) = &args.cgroup {
            cgroups = Some(enrich::cgroup_ids(&hierarchies, path)?);
        }
        let workloads = WorkloadFilter {
            container: args.container.clone(),
            pod: args.pod.clone(),
            workload: args.workload.clone(),
            namespace: args.namespace.clone(),
        };
        if workloads.is_set() {
            let selected = enricher.matching_cgroups(&workloads, Duration::from_secs(3)).await?;
            cgroups = Some(match cgroups {
                Some(mine) => mine.intersection(&selected).copied().collect(),
                None => selected,
            });
        }
        let filters = Filters { tgid: args.pid, cgroups };
        // The programs of these sources take no kernel-side filters.
        let user_filters = matches!(plan.source, Source::Processes | Source::Dns).then(|| filters.clone());
        let trace = Trace::load(&plan.source, &filters, &hierarchies, args.buffer_mib * 1024 * 1024)?;
        let stdout_is_terminal = std::io::stdout().is_terminal();
        let sink = Sink {
            format: match args.output {
                Output::Table => OutputFormat::Table,
                Output::Json => OutputFormat::Json,
            },
            columns: plan.columns,
            colour: stdout_is_terminal && std::env::var_os("NO_COLOR").is_none(),
            filter,
            aggregator: spec.is_active().then(|| Aggregator::new(spec)),
            adjust: plan.adjust,
            interval: args.interval,
            duration: args.duration,
            user_filters,
        };
        eprintln!("tracing {}: Ctrl-C to stop", args.target);
        session::run(trace, decoder, enricher, sink).await.map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {}

    #[test]
    fn unknown_syscalls_list_close_names() {
        let err = syscall_number("getpid2").unwrap_err().to_string();
        assert!(err.contains("unknown syscall `getpid2`") && err.contains("getpid"), "{err}");
        assert_eq!(syscall_number("openat").ok(), Some(libc::SYS_openat as u32));
    }
}
