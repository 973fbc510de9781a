"""The syscall filters of the sandbox, built once per pool with libseccomp.

Two stacked filters, shipped to the workers as BPF bytes so that workers never load libseccomp:
- WORKER: loaded by each zygote once it is set up, so every child inherits it at no cost;
- CHILD: what the zygote itself still needs (fork, kill, setting limits), loaded by each child
  after it has set up its session and limits. Kept small, since attaching costs per instruction.
Default allow; the listed syscalls answer EPERM (ENOSYS where libc should fall back).
"""

import errno
import os
import tempfile

import pyseccomp as sc

# No exec, ptrace or signals queued to others, no sockets, nothing that creates, modifies or
# deletes files, no changing ids, no namespace/mount/module/bpf/io_uring/clock tricks.
WORKER_DENIED = (
    "execve execveat ptrace process_vm_readv process_vm_writev rt_sigqueueinfo "
    "rt_tgsigqueueinfo socket socketpair creat unlink unlinkat rename renameat renameat2 "
    "mkdir mkdirat rmdir link linkat symlink symlinkat chmod fchmod fchmodat chown fchown "
    "lchown fchownat truncate ftruncate fallocate mknod mknodat utime utimes utimensat "
    "futimesat setxattr lsetxattr fsetxattr removexattr lremovexattr fremovexattr mount "
    "umount2 pivot_root chroot unshare setns reboot kexec_load kexec_file_load init_module "
    "finit_module delete_module bpf perf_event_open userfaultfd keyctl add_key request_key "
    "io_uring_setup io_uring_enter io_uring_register personality swapon swapoff syslog acct "
    "settimeofday clock_settime adjtimex sethostname setdomainname iopl ioperm quotactl "
    "name_to_handle_at open_by_handle_at setuid setgid setreuid setregid setresuid setresgid "
    "setgroups setfsuid setfsgid"
).split()
_O_TMPFILE = 0o20000000
WRITE_FLAGS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND, _O_TMPFILE)
# No new processes or threads, no signals to anyone, no new session/group, no raising limits.
CHILD_DENIED = (
    "fork vfork clone kill tkill tgkill pidfd_open pidfd_send_signal pidfd_getfd setsid " "setpgid setrlimit"
).split()


def _compile(add_rules):
    flt = sc.SyscallFilter(sc.ALLOW)

    def rule(action, name, *args):
        try:
            flt.add_rule(action, name, *args)
        except (OSError, RuntimeError, ValueError):
            pass  # syscall absent on this architecture

    add_rules(rule)
    with tempfile.TemporaryFile() as f:
        flt.export_bpf(f)
        f.seek(0)
        return f.read()


def worker_filter():
    def add(rule):
        for name in WORKER_DENIED:
            rule(sc.ERRNO(errno.EPERM), name)
        rule(sc.ERRNO(errno.ENOSYS), "openat2")  # flags in a struct seccomp cannot inspect
        for flag in WRITE_FLAGS:  # opening read-only is fine
            rule(sc.ERRNO(errno.EPERM), "open", sc.Arg(1, sc.MASKED_EQ, flag, flag))
            rule(sc.ERRNO(errno.EPERM), "openat", sc.Arg(2, sc.MASKED_EQ, flag, flag))

    return _compile(add)


def child_filter():
    def add(rule):
        for name in CHILD_DENIED:
            rule(sc.ERRNO(errno.EPERM), name)
        rule(sc.ERRNO(errno.ENOSYS), "clone3")  # libc then falls back to clone, denied above
        rule(sc.ERRNO(errno.EPERM), "prlimit64", sc.Arg(2, sc.NE, 0))  # reading is fine

    return _compile(add)
