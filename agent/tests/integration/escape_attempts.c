/* The escape attempts of integration test escape:: (escape.rs), built static with musl-gcc. */
#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/timex.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#define TIMES 5
static long granted, denied, failed;

static void answer(long r, int err) {
    if (r >= 0) granted++;
    else if (err == EPERM || err == EACCES || err == EROFS || err == ENOSYS) denied++;
    else failed++;
}
static void tally(long r) { answer(r, errno); }
static void report(const char *vector) {
    printf("vector=%s granted=%ld denied=%ld failed=%ld\n", vector, granted, denied, failed);
    granted = denied = failed = 0;
}
/* Runs `call` in a child (namespace changes stay there); the child exits with its answer. */
static void in_child(long (*call)(void)) {
    pid_t pid = fork();
    if (pid == 0) {
        long r = call();
        _exit(r >= 0 ? 0 : (errno == EPERM || errno == EACCES || errno == EROFS || errno == ENOSYS) ? 1 : 2);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 2;
    if (code == 0) granted++; else if (code == 1) denied++; else failed++;
}
static long unshare_user(void) { return unshare(CLONE_NEWUSER); }
static long unshare_uts(void) { return unshare(CLONE_NEWUTS); }
static long setns_uts(void) {
    int fd = open("/proc/self/ns/uts", O_RDONLY);
    long r = setns(fd, CLONE_NEWUTS);
    int e = errno; close(fd); errno = e;
    return r;
}

/* A listening socket at `path` (made once), and one connect to it: the answer. */
static long connect_to(const char *path) {
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);
    if (access(path, F_OK) != 0) {
        int server = socket(AF_UNIX, SOCK_STREAM, 0);
        bind(server, (struct sockaddr *)&addr, sizeof addr);
        listen(server, 64);
    }
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    long r = connect(c, (struct sockaddr *)&addr, sizeof addr);
    int e = errno; close(c); errno = e;
    return r;
}

int main(void) {
    mkdir("/tmp/m", 0700);
    for (int i = 0; i < TIMES; i++) {
        long r = mount("none", "/tmp/m", "proc", 0, NULL);
        tally(r);
        if (r == 0) umount2("/tmp/m", MNT_DETACH);
    }
    report("mount");
    for (int i = 0; i < TIMES; i++) in_child(setns_uts);
    report("setns");
    for (int i = 0; i < TIMES; i++) in_child(unshare_user);
    report("unshare_user");
    for (int i = 0; i < TIMES; i++) in_child(unshare_uts);
    report("unshare");
    for (int i = 0; i < TIMES; i++) tally(syscall(SYS_init_module, NULL, 0, ""));
    report("module_load");
    for (int i = 0; i < TIMES; i++) { char attr[128] = {0}; tally(syscall(SYS_bpf, 0, attr, sizeof attr)); }
    report("bpf");
    for (int i = 0; i < TIMES; i++) {
        /* struct perf_event_attr (musl has no linux/ headers): a software task clock of this
           process, user space only (type, size, config, then the flag bits at byte 40). */
        unsigned char attr[128] = {0};
        unsigned int type = 1, size = sizeof attr;
        unsigned long long config = 1, flags = (1ULL << 5) | (1ULL << 6);
        memcpy(attr, &type, 4); memcpy(attr + 4, &size, 4);
        memcpy(attr + 8, &config, 8); memcpy(attr + 40, &flags, 8);
        long fd = syscall(SYS_perf_event_open, attr, 0, -1, -1, 0);
        tally(fd);
        if (fd >= 0) close(fd);
    }
    report("perf_event_open");
    for (int i = 0; i < TIMES; i++) {
        char from = 'x', to = 0;
        struct iovec local = {&to, 1}, remote = {&from, 1};
        tally(syscall(SYS_process_vm_readv, getpid(), &local, 1, &remote, 1, 0));
    }
    report("ptrace");
    for (int i = 0; i < TIMES; i++) {
        int root = open("/", O_RDONLY | O_DIRECTORY);
        struct { unsigned int bytes; int type; unsigned char handle[8]; } h = {8, 1, {0}};
        tally(syscall(SYS_open_by_handle_at, root, &h, O_RDONLY));
        close(root);
    }
    report("open_by_handle_at");
    for (int i = 0; i < TIMES; i++) {
        long r = mknod("/tmp/loop-node", S_IFBLK | 0600, makedev(7, 200));
        tally(r);
        unlink("/tmp/loop-node");
    }
    report("mknod_device");
    for (int i = 0; i < TIMES; i++) tally(syscall(SYS_keyctl, 0, -2, 1));
    report("keyctl");
    for (int i = 0; i < TIMES; i++) {
        long fd = syscall(SYS_userfaultfd, 0);
        tally(fd);
        if (fd >= 0) close(fd);
    }
    report("userfaultfd");
    for (int i = 0; i < TIMES; i++) tally(syscall(SYS_kexec_load, 0, 0, NULL, 0x80));
    report("kexec");
    for (int i = 0; i < TIMES; i++) tally(syscall(SYS_reboot, 0, 0, 0, NULL));
    report("reboot");
    for (int i = 0; i < TIMES; i++) tally(syscall(SYS_swapon, "/nonexistent-swap", 0));
    report("swapon");
    for (int i = 0; i < TIMES; i++) {
        struct timespec bad = {0, 2000000000L};
        tally(syscall(SYS_clock_settime, CLOCK_REALTIME, &bad));
    }
    report("clock");
    for (int i = 0; i < TIMES; i++) tally(syscall(SYS_ioperm, 0x80, 1, 1));
    report("ioport");
    for (int i = 0; i < TIMES; i++) {
        /* Opened, never written: the host's core_pattern is not changed. */
        int fd = open("/proc/sys/kernel/core_pattern", O_WRONLY);
        tally(fd);
        if (fd >= 0) close(fd);
    }
    /* The same file through a symlink of another name and through a path longer than the agent
       reads of a path: an open that succeeds is told by the file it opened, whatever path
       reached it. One that is refused opened nothing and is told by its path, which these
       hide: only the granted ones are expected. */
    char long_path[300] = "/proc/sys/kernel/";
    for (int i = 0; i < 60; i++) strcat(long_path, "./");
    strcat(long_path, "core_pattern");
    symlink("/proc/sys/kernel/core_pattern", "/tmp/innocent");
    const char *hidden[] = {"/tmp/innocent", long_path};
    for (int h = 0; h < 2; h++) {
        for (int i = 0; i < TIMES; i++) {
            int fd = open(hidden[h], O_WRONLY);
            if (fd >= 0) { granted++; close(fd); }
        }
    }
    report("host_file_write");
    /* docker.sock by its name, then through a symlink of another name: the listener's name. */
    for (int i = 0; i < TIMES; i++) tally(connect_to("/tmp/docker.sock"));
    symlink("/tmp/docker.sock", "/tmp/innocent.sock");
    for (int i = 0; i < TIMES; i++) tally(connect_to("/tmp/innocent.sock"));
    report("runtime_socket");
    /* The first block device the container sees (the host's, when privileged), read only. */
    char device[300] = "";
    DIR *dev = opendir("/dev");
    for (struct dirent *e; dev && !device[0] && (e = readdir(dev));) {
        char path[300];
        struct stat st;
        snprintf(path, sizeof path, "/dev/%s", e->d_name);
        if (stat(path, &st) == 0 && S_ISBLK(st.st_mode)) strcpy(device, path);
    }
    if (dev) closedir(dev);
    if (device[0]) {
        for (int i = 0; i < TIMES; i++) {
            int fd = open(device, O_RDONLY);
            tally(fd);
            if (fd >= 0) close(fd);
        }
        report("block_device_open");
    }

    /* Not vectors: a FIFO, a child asking to be traced, clock reads, opens of other files or
       for reading, connects to other sockets. */
    for (int i = 0; i < TIMES; i++) {
        close(open("/tmp/written", O_WRONLY | O_CREAT, 0600));
        close(open("/tmp/core_pattern", O_WRONLY | O_CREAT, 0600)); /* so named, on no host fs */
        close(open("/tmp/innocent", O_RDONLY));
        close(open("/proc/sys/kernel/core_pattern", O_RDONLY));
        connect_to("/tmp/app.sock");
    }
    for (int i = 0; i < TIMES; i++) { mknod("/tmp/fifo", S_IFIFO | 0600, 0); unlink("/tmp/fifo"); }
    for (int i = 0; i < TIMES; i++) {
        pid_t pid = fork();
        if (pid == 0) { ptrace(PTRACE_TRACEME, 0, NULL, NULL); _exit(0); }
        waitpid(pid, NULL, 0);
    }
    for (int i = 0; i < TIMES; i++) { struct timex t; memset(&t, 0, sizeof t); adjtimex(&t); }
    printf("done\n");
    fflush(stdout);
    sleep(120);
    return 0;
}
