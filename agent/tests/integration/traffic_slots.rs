//! Traffic counted in slots: the agent gives a cgroup whose traffic the hash holds the slot its
//! id masks to, the cgroup_skb programs count there from then on, and a cgroup's count stays
//! exact across the move. A tenant can pick ids that share another's slot (by creating and
//! removing cgroups until one does): the cgroup left without a slot keeps counting in the hash,
//! exactly too, and a slot freed by a removed cgroup goes to one that waited for it. Traffic
//! runs over the loopback of a network namespace each workload makes.

use std::{collections::BTreeSet, net::Ipv4Addr, os::unix::fs::MetadataExt as _, time::Duration};

use crate::{
    net_support::{loopback_up, udp_bound, udp_receive, udp_send},
    support::{
        self, Agent, TestCgroup, config_file, parse, path_str, pinned_ids, pinned_per_cpu, poll, privileged,
        sum_u64_at, value,
    },
};

/// 128 hash entries (room for the 32 cgroups below, both ways): 64 slots.
const CONFIG: &str = "[network]\ninterface_counters = \"off\"\ncgroup_traffic_max_entries = 128\n\
                      [syscalls]\nforget_after_seconds = 1\n";
const SLOTS: u64 = 64;
/// Cgroups made one after the other, and as many again as twins of the first ones: cgroups
/// whose ids share a slot with theirs, as a tenant can make by creating and removing cgroups
/// until one's id does.
const FIRST: usize = 24;
const TWINS: usize = 8;
const CGROUPS: usize = FIRST + TWINS;
const PAYLOAD: usize = 32;
const PORT: u16 = 4242;
/// An IPv4 UDP datagram's length as cgroup_skb counts it.
const DATAGRAM: u64 = 20 + 8 + PAYLOAD as u64;

struct Tenant {
    cgroup: TestCgroup,
    id: u64,
}

impl Tenant {
    fn create(name: &str) -> Self {
        let cgroup = TestCgroup::create(name);
        let id = std::fs::metadata(&cgroup.path).expect("the cgroup's inode").ino();
        Self { cgroup, id }
    }

    /// A cgroup whose id masks to `slot`: cgroups are made and removed until one's does (ids
    /// are given out in order, so within about `SLOTS` tries).
    fn twin(name: &str, slot: u64) -> Self {
        for attempt in 0..4 * SLOTS {
            let tenant = Self::create(&format!("{name}-{attempt}"));
            if tenant.id % SLOTS == slot {
                return tenant;
            }
        }
        panic!("no cgroup id masked to slot {slot} in {} tries", 4 * SLOTS);
    }

    /// Sends `count` datagrams between two sockets of its cgroup, over the loopback of a network
    /// namespace of its own: `count` sent and `count` received by the cgroup.
    fn exchange(&self, count: usize) {
        let code = self.cgroup.run(|| {
            // SAFETY: unshare in the forked child, which is alone in its new namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 || !loopback_up() {
                return 2;
            }
            let receiver = udp_bound(Ipv4Addr::LOCALHOST, PORT);
            let sender = udp_bound(Ipv4Addr::LOCALHOST, 0);
            if receiver < 0
                || sender < 0
                || udp_send(sender, Ipv4Addr::LOCALHOST, PORT, count, PAYLOAD) != count
            {
                return 3;
            }
            if udp_receive(receiver, count) != count {
                return 4;
            }
            0
        });
        assert_eq!(code, 0, "the workload failed (2: netns, 3: send, 4: receive)");
    }

    /// (packets, bytes) sent and received, as the agent serves them.
    fn counted(&self, agent: &Agent) -> [(u64, u64); 2] {
        let samples = parse(&agent.scrape());
        let of = [("cgroup", self.cgroup.label.as_str())];
        ["transmit", "receive"].map(|verb| {
            let series = |what: &str| {
                value(&samples, &format!("kernsight_container_network_{verb}_{what}_total"), &of) as u64
            };
            (series("packets"), series("bytes"))
        })
    }
}

/// [(packets, bytes) sent, (packets, bytes) received] in the row of `slot` of the pinned
/// `NET_TRAFFIC_ROWS`, over all CPUs.
fn row(agent: &Agent, slot: u64) -> [(u64, u64); 2] {
    let pins = agent.pin_dir().expect("the agent's own pin directory");
    let cpus = pinned_per_cpu(pins, "NET_TRAFFIC_ROWS", slot as u32);
    // `TrafficRow`: ingress packets and bytes, then egress packets and bytes.
    let at = |offset| sum_u64_at(&cpus, offset);
    [(at(16), at(24)), (at(0), at(8))]
}

/// Our tenants holding a slot, once as many hold one as can: every slot one of them masks to,
/// but those the node's own cgroups took first.
fn tenants_with_slots(agent: &Agent, tenants: &[Tenant]) -> BTreeSet<u64> {
    let pins = agent.pin_dir().expect("the agent's own pin directory");
    let ours: BTreeSet<u64> = tenants.iter().map(|t| t.id).collect();
    let wanted: BTreeSet<u64> = tenants.iter().map(|t| t.id % SLOTS).collect();
    poll(Duration::from_secs(15), || {
        let tags = pinned_ids(pins, "NET_TRAFFIC_TAGS");
        let foreign =
            tags.iter().filter(|id| !ours.contains(id)).map(|id| id % SLOTS).collect::<BTreeSet<_>>();
        let tagged: BTreeSet<u64> = tags.into_iter().filter(|id| ours.contains(id)).collect();
        let expected = wanted.difference(&foreign).count();
        if tagged.len() == expected {
            Ok(tagged)
        } else {
            Err(format!("{} of {expected} slots given", tagged.len()))
        }
    })
    .unwrap_or_else(|last| panic!("traffic slots not given out: {last}"))
}

#[test]
fn cgroups_count_exactly_in_slots_in_the_hash_and_across_the_move() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let (_dir, config) = config_file(CONFIG);
    let agent = Agent::start(&["--config", path_str(&config)]);
    let mut tenants: Vec<Tenant> = (0..FIRST).map(|i| Tenant::create(&format!("slots-{i}"))).collect();
    for i in 0..TWINS {
        let slot = tenants[i].id % SLOTS;
        tenants.push(Tenant::twin(&format!("slots-twin-{i}"), slot));
    }
    let exactly = |n: u64| [(n, n * DATAGRAM); 2];

    // Counted in the hash first: no cgroup of ours had traffic before.
    for tenant in &tenants {
        tenant.exchange(1);
    }
    let slotted = tenants_with_slots(&agent, &tenants);
    let waiting: Vec<u64> = tenants.iter().map(|t| t.id).filter(|id| !slotted.contains(id)).collect();
    eprintln!("{} of {CGROUPS} cgroups hold a slot, {} share theirs", slotted.len(), waiting.len());
    assert!(!slotted.is_empty(), "no cgroup was given a slot");
    assert!(!waiting.is_empty(), "{CGROUPS} cgroups in {SLOTS} slots: some must share");

    for tenant in &tenants {
        tenant.exchange(2);
    }
    for tenant in &tenants {
        let where_ = if slotted.contains(&tenant.id) { "in its slot" } else { "in the hash" };
        assert_eq!(tenant.counted(&agent), exactly(3), "{} counted {where_}", tenant.cgroup.label);
        if slotted.contains(&tenant.id) {
            // The programs counted the last two each way in the row, not in the hash.
            assert_eq!(row(&agent, tenant.id % SLOTS), exactly(2), "{}'s row", tenant.cgroup.label);
        }
    }

    // A slot holder is removed: its slot goes, a pass after it is untagged, to a cgroup of ours
    // that masks to it and has waited in the hash.
    let (index, heir) = tenants
        .iter()
        .enumerate()
        .filter(|(_, t)| slotted.contains(&t.id))
        .find_map(|(i, t)| waiting.iter().find(|&&w| w % SLOTS == t.id % SLOTS).map(|&w| (i, w)))
        .expect("a slot holder with a cgroup of ours waiting for its slot");
    let gone = tenants.remove(index);
    let gone_id = gone.id;
    drop(gone);
    let pins = agent.pin_dir().expect("the agent's own pin directory");
    poll(Duration::from_secs(15), || {
        let tags = pinned_ids(pins, "NET_TRAFFIC_TAGS");
        match (tags.contains(&gone_id), tags.contains(&heir)) {
            (false, true) => Ok(()),
            state => Err(format!("(removed cgroup tagged, heir tagged): {state:?}")),
        }
    })
    .unwrap_or_else(|last| panic!("the removed cgroup's slot did not pass on: {last}"));
    let heir = tenants.iter().find(|t| t.id == heir).expect("the heir");
    heir.exchange(4);
    assert_eq!(heir.counted(&agent), exactly(7), "counted in the hash, then in the slot it inherited");
    assert_eq!(row(&agent, heir.id % SLOTS), exactly(4), "the inherited row holds only the heir's");
}
