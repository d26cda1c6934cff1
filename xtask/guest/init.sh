#!/bin/busybox sh
# /init of the kernel-matrix guests (cargo xtask test-kernels): a node with pure cgroup v2 and
# nothing else, the filesystems kernsight uses, then /matrix/run.sh with its output on the second
# serial port (the host reads it from a file) and a heartbeat on the third, then power off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root /etc /boot /var/tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp

mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# Pure cgroup v2, as on most Kubernetes nodes: no v1 hierarchy is mounted. Controllers one by
# one, so that one the kernel lacks does not keep the others off.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for controller in memory cpu pids io; do
    echo "+$controller" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null ||
        echo "init: no $controller controller in this kernel"
done
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
# The clsact qdisc and the BPF classifier, modules in Debian's kernels, which a node loads on
# demand: kernsight's TC counters need them before 6.6 (no tcx). The guests have no modprobe.
for module in /matrix/modules/*.ko; do
    [ -e "$module" ] || continue
    insmod "$module" || echo "init: cannot load $module"
done
# Without loopback nothing connects to 127.0.0.1. The guests have no network device (Debian's
# virtio_net is a module); a default route through loopback gives net_tc, which watches the
# default route's interface, somewhere to attach, as a node's eth0 would.
ip link set lo up
ip route add default dev lo
hostname kernsight-guest
# Where tools (bpftool feature probe, kernsight check) look for the kernel's configuration.
cp /matrix/config "/boot/config-$(uname -r)"

# The results go to the second serial port, and a line every 10 s to the third: the host boots
# the guest again (once) when that heartbeat stops for long, which is how software emulation's
# rare hangs of both CPUs look (xtask/src/kernels/guest.rs). The arm `virt` machine has one UART
# (ttyAMA0), the console, which then carries all three.
out=/dev/ttyS1 heartbeat=/dev/ttyS2
if [ -c /dev/ttyAMA0 ]; then out=/dev/ttyAMA0 heartbeat=/dev/ttyAMA0; fi
(while sleep 10; do echo "alive $(cut -d ' ' -f 1 /proc/uptime)"; done > "$heartbeat") &
sh /matrix/run.sh > "$out" 2>&1
sync
poweroff -f
