//! Ember's init: PID 1 of every OCI instance (unless its container sets
//! `"init": false`), as `docker run --init` gives one. Run as
//! `/.ember/init -- PROGRAM [ARG...]`, it starts the workload as its child (found
//! on `PATH` when the name has no slash), passes every signal it gets on to it,
//! reaps every process that ends in the container (orphans are reparented to PID
//! 1), and exits with the workload's status: its exit code, or 128 plus the signal
//! that ended it.
//!
//! Why: the kernel drops a signal sent to a PID 1 that has no handler for it, so a
//! workload that is PID 1 and never installed a SIGTERM handler (busybox httpd,
//! many Node, Python and Go servers) outlives a stop's SIGTERM and only goes at
//! SIGKILL, after the whole grace period. Under this init it is an ordinary
//! process, and SIGTERM ends it at once.
//!
//! It runs in any image, with or without a C library, and costs a cold start as
//! little as a program can: no standard library and no libc, only system calls,
//! so it is a few kilobytes, statically linked by `sandbox/build.rs` (a version on
//! the standard library added about 0.5 ms to each cold start). x86_64 and aarch64
//! Linux.

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

#[cfg(target_arch = "x86_64")]
mod sys {
    pub const WRITE: usize = 1;
    pub const RT_SIGACTION: usize = 13;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const CLONE: usize = 56;
    pub const EXECVE: usize = 59;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const RT_SIGTIMEDWAIT: usize = 128;
    pub const EXIT_GROUP: usize = 231;
}

#[cfg(target_arch = "aarch64")]
mod sys {
    pub const WRITE: usize = 64;
    pub const RT_SIGACTION: usize = 134;
    pub const RT_SIGPROCMASK: usize = 135;
    pub const CLONE: usize = 220;
    pub const EXECVE: usize = 221;
    pub const WAIT4: usize = 260;
    pub const KILL: usize = 129;
    pub const RT_SIGTIMEDWAIT: usize = 137;
    pub const EXIT_GROUP: usize = 94;
}

// The entry point: the kernel leaves argc, argv and envp on the stack.
#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "xor rbp, rbp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call ember_init_main",
    "ud2",
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov x0, sp",
    "bl ember_init_main",
    "brk #0",
);

#[cfg(target_arch = "x86_64")]
unsafe fn syscall(n: usize, a: [usize; 4]) -> isize {
    let ret: isize;
    // SAFETY: the caller passes a system call and its arguments.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret, in("rdi") a[0], in("rsi") a[1],
             in("rdx") a[2], in("r10") a[3], lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn syscall(n: usize, a: [usize; 4]) -> isize {
    let ret: isize;
    // SAFETY: the caller passes a system call and its arguments.
    unsafe {
        asm!("svc 0", in("x8") n, inlateout("x0") a[0] as isize => ret, in("x1") a[1],
             in("x2") a[2], in("x3") a[3], options(nostack));
    }
    ret
}

const SIGCHLD: usize = 17;
const SIG_BLOCK: usize = 0;
const SIG_SETMASK: usize = 2;
const WNOHANG: usize = 1;
const ENOENT: isize = 2;
const EINTR: isize = 4;
/// The kernel's signal set: 64 bits.
const SIGSET_SIZE: usize = 8;
/// Signals the kernel raises for a fault of the process itself (ILL, TRAP, BUS,
/// FPE, SEGV, SYS): never blocked, never forwarded.
const FAULTS: [usize; 6] = [4, 5, 7, 8, 11, 31];
/// SIGKILL and SIGSTOP, which cannot be blocked or handled.
const UNCATCHABLE: [usize; 2] = [9, 19];

/// The kernel's `struct sigaction` (x86_64 and aarch64 alike).
#[repr(C)]
struct SigAction {
    handler: usize,
    flags: usize,
    restorer: usize,
    mask: u64,
}

#[repr(C)]
struct TimeSpec {
    seconds: isize,
    nanoseconds: isize,
}

fn bit(signal: usize) -> u64 {
    1 << (signal - 1)
}

fn write_stderr(parts: &[&[u8]]) {
    for part in parts {
        // SAFETY: writes the bytes of a live slice to fd 2.
        unsafe { syscall(sys::WRITE, [2, part.as_ptr() as usize, part.len(), 0]) };
    }
}

fn exit(code: usize) -> ! {
    // SAFETY: ends the process.
    unsafe { syscall(sys::EXIT_GROUP, [code, 0, 0, 0]) };
    loop {}
}

/// The NUL-terminated string at `p`, without its NUL.
///
/// # Safety
/// `p` points to a NUL-terminated string that lives as long as the process.
unsafe fn c_str(p: *const u8) -> &'static [u8] {
    let mut len = 0;
    // SAFETY: the string is NUL-terminated.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` bytes from `p` are the string.
    unsafe { core::slice::from_raw_parts(p, len) }
}

/// Executes `program` with `argv` and `envp`, looking it up on `PATH` (from
/// `envp`, or the usual default) when its name has no slash, as `execvp` does.
/// Returns only on failure, with the error of the most telling attempt.
///
/// # Safety
/// `argv` and `envp` are the NULL-terminated arrays the kernel gave this process.
unsafe fn exec(program: &[u8], argv: *const *const u8, envp: *const *const u8) -> isize {
    let mut path = [0u8; 4096];
    if program.contains(&b'/') {
        if program.len() >= path.len() {
            return -ENOENT;
        }
        path[..program.len()].copy_from_slice(program);
        // SAFETY: `path` is NUL-terminated; argv and envp are the kernel's.
        return unsafe {
            syscall(sys::EXECVE, [path.as_ptr() as usize, argv as usize, envp as usize, 0])
        };
    }
    let mut search: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut e = envp;
    // SAFETY: envp is NULL-terminated, each entry NUL-terminated.
    while unsafe { !(*e).is_null() } {
        let entry = unsafe { c_str(*e) };
        if let Some(value) = entry.strip_prefix(b"PATH=") {
            search = value;
        }
        e = unsafe { e.add(1) };
    }
    let mut error = -ENOENT;
    for dir in search.split(|b| *b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let len = dir.len() + 1 + program.len();
        if len >= path.len() {
            continue;
        }
        path[..dir.len()].copy_from_slice(dir);
        path[dir.len()] = b'/';
        path[dir.len() + 1..len].copy_from_slice(program);
        path[len] = 0;
        // SAFETY: as above.
        let failed = unsafe {
            syscall(sys::EXECVE, [path.as_ptr() as usize, argv as usize, envp as usize, 0])
        };
        // A file found but not runnable says more than one not found.
        if failed != -ENOENT {
            error = failed;
        }
    }
    error
}

/// The status to exit with for a child's wait status.
fn exit_code(status: u32) -> usize {
    let signal = status & 0x7f;
    if signal == 0 {
        ((status >> 8) & 0xff) as usize
    } else {
        128 + signal as usize
    }
}

#[unsafe(no_mangle)]
extern "C" fn ember_init_main(stack: *const usize) -> ! {
    // SAFETY: the stack the kernel set up: argc, argv[argc], NULL, envp..., NULL.
    let (argc, argv) = unsafe { (*stack, stack.add(1) as *const *const u8) };
    let envp = unsafe { argv.add(argc + 1) };
    let mut first = 1;
    if argc > 1 && unsafe { c_str(*argv.add(1)) } == b"--" {
        first = 2;
    }
    if first >= argc {
        write_stderr(&[b"ember-init: no program to run (usage: init -- PROGRAM [ARG...])\n"]);
        exit(127);
    }
    let program_argv = unsafe { argv.add(first) };
    let program = unsafe { c_str(*program_argv) };

    // Every signal back to its default (an ignored one would be discarded, and the
    // workload would inherit it ignored), then blocked, so that each waits for
    // `rt_sigtimedwait` below; blocked from before the fork, so that none is lost.
    let mut handled: u64 = 0;
    for signal in 1..=64 {
        if FAULTS.contains(&signal) || UNCATCHABLE.contains(&signal) {
            continue;
        }
        let default = SigAction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: sets a signal's disposition to SIG_DFL.
        unsafe {
            syscall(
                sys::RT_SIGACTION,
                [signal, &default as *const SigAction as usize, 0, SIGSET_SIZE],
            )
        };
        handled |= bit(signal);
    }
    let mut before: u64 = 0;
    // SAFETY: blocks the set, keeping the mask the workload gets back.
    unsafe {
        syscall(
            sys::RT_SIGPROCMASK,
            [SIG_BLOCK, &handled as *const u64 as usize, &mut before as *mut u64 as usize, SIGSET_SIZE],
        )
    };
    // fork(): clone with only SIGCHLD as the exit signal.
    let child = unsafe { syscall(sys::CLONE, [SIGCHLD, 0, 0, 0]) };
    if child < 0 {
        write_stderr(&[b"ember-init: cannot start ", program, b": fork failed\n"]);
        exit(126);
    }
    if child == 0 {
        // SAFETY: the child restores the mask and becomes the workload.
        unsafe {
            syscall(
                sys::RT_SIGPROCMASK,
                [SIG_SETMASK, &before as *const u64 as usize, 0, SIGSET_SIZE],
            );
            let error = exec(program, program_argv, envp);
            write_stderr(&[b"ember-init: cannot run ", program]);
            if error == -ENOENT {
                write_stderr(&[b": not found\n"]);
                exit(127);
            }
            write_stderr(&[b": not executable\n"]);
            exit(126);
        }
    }
    let child = child as usize;
    // A wake-up at least every second, so that a reap is never missed for long.
    let tick = TimeSpec {
        seconds: 1,
        nanoseconds: 0,
    };
    let mut info = [0u64; 16];
    loop {
        // SAFETY: waits for one of the blocked signals; `info` takes its details.
        let received = unsafe {
            syscall(
                sys::RT_SIGTIMEDWAIT,
                [
                    &handled as *const u64 as usize,
                    info.as_mut_ptr() as usize,
                    &tick as *const TimeSpec as usize,
                    SIGSET_SIZE,
                ],
            )
        };
        if received > 0 && received as usize != SIGCHLD {
            // SAFETY: a signal to our own child.
            unsafe { syscall(sys::KILL, [child, received as usize, 0, 0]) };
        } else if received < 0 && received == -EINTR {
            continue;
        }
        loop {
            let mut status: u32 = 0;
            // SAFETY: reaps any ended child without blocking.
            let reaped = unsafe {
                syscall(
                    sys::WAIT4,
                    [usize::MAX, &mut status as *mut u32 as usize, WNOHANG, 0],
                )
            };
            if reaped <= 0 {
                break;
            }
            if reaped as usize == child {
                exit(exit_code(status));
            }
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    exit(125)
}

// What the compiler may call for copies and fills; with no C library, they are
// here. Volatile byte loops, so that they are not turned back into calls to
// themselves.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller's contract, as for C's memcpy.
        unsafe { dest.add(i).write_volatile(src.add(i).read_volatile()) };
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) {
        // SAFETY: copying forwards never overwrites what is still to be read.
        return unsafe { memcpy(dest, src, n) };
    }
    for i in (0..n).rev() {
        // SAFETY: the caller's contract, as for C's memmove.
        unsafe { dest.add(i).write_volatile(src.add(i).read_volatile()) };
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller's contract, as for C's memset.
        unsafe { dest.add(i).write_volatile(value as u8) };
    }
    dest
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller's contract, as for C's memcmp.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: as memcmp.
    unsafe { memcmp(a, b, n) }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut len = 0;
    // SAFETY: the caller's contract, as for C's strlen.
    while unsafe { s.add(len).read_volatile() } != 0 {
        len += 1;
    }
    len
}

/// The standard library's core is built for unwinding and names this routine;
/// with `panic=abort` nothing unwinds, so it is never called.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
