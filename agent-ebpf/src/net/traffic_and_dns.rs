//! The default's cgroup_skb programs: per-cgroup traffic and DNS capture in one program per
//! direction, attached to the cgroup v2 root in place of `traffic`'s and `dns`'s when both
//! families run. Every packet then enters one BPF program per direction, not two: the kernel's
//! dispatch of a cgroup_skb program (an empty one costs some 50 ns a run) is paid once.

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
use kernsight_common::{dns, net};

use super::{dns::capture, traffic::ALLOW, traffic::count};

#[cgroup_skb(ingress)]
pub fn ks_net_dns_ingress(ctx: SkBuffContext) -> i32 {
    count(&ctx, net::INGRESS);
    capture(&ctx, dns::INGRESS);
    ALLOW
}

#[cgroup_skb(egress)]
pub fn ks_net_dns_egress(ctx: SkBuffContext) -> i32 {
    count(&ctx, net::EGRESS);
    capture(&ctx, dns::EGRESS);
    ALLOW
}
