/* A static probe for the escape battery: makes one syscall (or a short
 * sequence) the container's busybox cannot, and prints the outcome as one
 * word: "ok" or the errno's name (EPERM, EROFS, ...). Always exits 0.
 * Arguments are chosen so that an allowed call fails harmlessly or does
 * nothing outside the container. Built at test time: gcc -static. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static void say(long rc) {
    if (rc < 0) printf("%s\n", strerrorname_np(errno));
    else printf("ok\n");
}

static void table(void) {
    /* name errno, for calls with harmless (mostly invalid) arguments. */
    long rc;
#define ROW(name, call) do { errno = 0; rc = (call); printf("%s %s\n", name, rc < 0 ? strerrorname_np(errno) : "0"); } while (0)
    ROW("getpid", syscall(SYS_getpid));
    ROW("mount", syscall(SYS_mount, NULL, NULL, NULL, 0, NULL));
    ROW("umount2", syscall(SYS_umount2, NULL, 0));
    ROW("unshare", syscall(SYS_unshare, 0));
    ROW("setns", syscall(SYS_setns, -1, 0));
    ROW("pivot_root", syscall(SYS_pivot_root, NULL, NULL));
    ROW("keyctl", syscall(SYS_keyctl, -1, 0, 0, 0, 0));
    ROW("add_key", syscall(SYS_add_key, NULL, NULL, NULL, 0, 0));
    ROW("bpf", syscall(SYS_bpf, -1, NULL, 0));
    ROW("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    ROW("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, NULL, 0));
    ROW("reboot", syscall(SYS_reboot, 0, 0, 0, NULL));
    ROW("init_module", syscall(SYS_init_module, NULL, 0, ""));
    ROW("finit_module", syscall(SYS_finit_module, -1, "", 0));
    ROW("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    ROW("swapon", syscall(SYS_swapon, NULL, 0));
    ROW("syslog", syscall(SYS_syslog, -1, NULL, 0));
    ROW("userfaultfd", syscall(SYS_userfaultfd, -1));
    ROW("io_uring_setup", syscall(SYS_io_uring_setup, 0, NULL));
    ROW("chroot", syscall(SYS_chroot, NULL));
    ROW("ptrace_peek_1", syscall(SYS_ptrace, PTRACE_PEEKDATA, 1, 0, 0));
    ROW("clone3", syscall(435, NULL, 0));
    ROW("nr_467", syscall(467, 0, 0, 0, 0, 0, 0));
    ROW("nr_468", syscall(468, 0, 0, 0, 0, 0, 0));
    ROW("nr_500", syscall(500, 0, 0, 0, 0, 0, 0));
    ROW("sethostname", syscall(SYS_sethostname, NULL, 1));
    ROW("personality_bad", syscall(SYS_personality, 0x1234));
    ROW("personality_query", syscall(SYS_personality, 0xffffffff));
    rc = syscall(SYS_socket, 38 /* AF_ALG */, SOCK_SEQPACKET, 0);
    printf("socket_alg %s\n", rc < 0 ? strerrorname_np(errno) : "0");
    if (rc >= 0) close(rc);
    rc = syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0);
    printf("socket_unix %s\n", rc < 0 ? strerrorname_np(errno) : "0");
    if (rc >= 0) close(rc);
    /* clone with a namespace flag: refused without CAP_SYS_ADMIN. */
    rc = syscall(SYS_clone, CLONE_NEWUTS | SIGCHLD, 0, NULL, NULL, 0);
    if (rc == 0) _exit(0);
    printf("clone_newuts %s\n", rc < 0 ? strerrorname_np(errno) : "0");
    if (rc > 0) waitpid(rc, NULL, 0);
    rc = syscall(SYS_clone, SIGCHLD, 0, NULL, NULL, 0);
    if (rc == 0) _exit(0);
    printf("clone_plain %s\n", rc < 0 ? strerrorname_np(errno) : "0");
    if (rc > 0) waitpid(rc, NULL, 0);
#undef ROW
}

static void chroot_escape(const char *marker) {
    /* The classic: chroot into a subdirectory while keeping a cwd outside
     * it, then walk up with ".." and chroot there. It leaves the inner
     * chroot; the question is whether it reaches the host's root. */
    mkdir("/tmp/probe-jail", 0755);
    int outside = open("/", O_RDONLY | O_DIRECTORY);
    if (chroot("/tmp/probe-jail") < 0) { say(-1); return; }
    int inner_sees_bin = access("/bin/busybox", F_OK) == 0;
    fchdir(outside);
    for (int i = 0; i < 64; i++) chdir("..");
    if (chroot(".") < 0) { say(-1); return; }
    int escaped = access("/bin/busybox", F_OK) == 0 && !inner_sees_bin;
    int host = access(marker, F_OK) == 0;
    printf("%s %s\n", escaped ? "left-inner-chroot" : "stayed-inner", host ? "HOST-ROOT-VISIBLE" : "host-root-hidden");
}

static void device(int kind, int major, int minor) {
    unlink("/dev/probe-disk");
    if (mknod("/dev/probe-disk", kind | 0600, makedev(major, minor)) < 0) {
        printf("mknod=%s\n", strerrorname_np(errno));
        return;
    }
    int fd = open("/dev/probe-disk", O_RDONLY);
    if (fd < 0) { printf("mknod=ok open=%s\n", strerrorname_np(errno)); unlink("/dev/probe-disk"); return; }
    char buf[512];
    long n = read(fd, buf, sizeof buf);
    printf("mknod=ok open=ok read=%s\n", n < 0 ? strerrorname_np(errno) : "ok");
    close(fd);
    unlink("/dev/probe-disk");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) { fprintf(stderr, "usage: probe CHECK [ARG]\n"); return 2; }
    const char *what = argv[1];
    const char *arg = argc > 2 ? argv[2] : "";
    if (!strcmp(what, "table")) table();
    else if (!strcmp(what, "mount")) say(mount("none", "/tmp", "tmpfs", 0, NULL));
    else if (!strcmp(what, "umount")) say(umount2(arg, 0));
    else if (!strcmp(what, "setns")) {
        int fd = open("/proc/self/ns/mnt", O_RDONLY);
        say(fd < 0 ? -1 : syscall(SYS_setns, fd, CLONE_NEWNS));
    } else if (!strcmp(what, "pivot_root")) {
        say(chdir("/") < 0 ? -1 : syscall(SYS_pivot_root, ".", "."));
    } else if (!strcmp(what, "chroot_escape")) chroot_escape(arg);
    else if (!strcmp(what, "ptrace")) {
        pid_t pid = atoi(arg);
        long rc = ptrace(PTRACE_ATTACH, pid, 0, 0);
        if (rc == 0) { waitpid(pid, NULL, __WALL); ptrace(PTRACE_DETACH, pid, 0, 0); }
        say(rc);
    } else if (!strcmp(what, "keyctl")) say(syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
    else if (!strcmp(what, "bpf")) {
        char attr[128] = {0};
        long rc = syscall(SYS_bpf, 0 /* MAP_CREATE */, attr, sizeof attr);
        if (rc >= 0) close(rc);
        say(rc);
    } else if (!strcmp(what, "perf_event_open")) {
        char attr[128] = {0};
        long rc = syscall(SYS_perf_event_open, attr, 0, -1, -1, 0);
        if (rc >= 0) close(rc);
        say(rc);
    } else if (!strcmp(what, "open_by_handle_at")) {
        struct { unsigned int bytes; int type; unsigned char f[128]; } handle = {128, 0, {0}};
        int mount_id;
        if (syscall(SYS_name_to_handle_at, AT_FDCWD, "/etc/hostname", &handle, &mount_id, 0) < 0) { say(-1); return 0; }
        int root = open("/", O_RDONLY | O_DIRECTORY);
        long rc = syscall(SYS_open_by_handle_at, root, &handle, O_RDONLY);
        if (rc >= 0) close(rc);
        say(rc);
    } else if (!strcmp(what, "openw")) {
        int fd = open(arg, O_WRONLY);
        if (fd >= 0) close(fd);
        say(fd);
    } else if (!strcmp(what, "read")) {
        char buf[4096];
        int fd = open(arg, O_RDONLY);
        if (fd < 0) { say(-1); return 0; }
        long n = read(fd, buf, sizeof buf);
        if (n < 0) say(-1);
        else printf("%s\n", n ? "data" : "empty");
        close(fd);
    } else if (!strcmp(what, "write")) {
        int fd = open(arg, O_WRONLY);
        say(fd < 0 ? -1 : write(fd, "x\n", 2));
    } else if (!strcmp(what, "dev")) {  /* dev b|c MAJOR:MINOR */
        int major = 0, minor = 0;
        sscanf(argc > 3 ? argv[3] : "", "%d:%d", &major, &minor);
        device(arg[0] == 'b' ? S_IFBLK : S_IFCHR, major, minor);
    } else if (!strcmp(what, "init_module")) say(syscall(SYS_init_module, NULL, 0, ""));
    else if (!strcmp(what, "finit_module")) say(syscall(SYS_finit_module, -1, "", 0));
    else if (!strcmp(what, "reboot")) say(syscall(SYS_reboot, 0xfee1dead, 672274793, 0 /* CAD_OFF */, NULL));
    else if (!strcmp(what, "kill")) say(kill(atoi(arg), SIGKILL));
    else { fprintf(stderr, "probe: unknown check %s\n", what); return 2; }
    return 0;
}
