/* Preloaded into a benchmark run (LD_PRELOAD) to make an AVX-512 machine look like an
 * AVX2 one to every library in the process: `python benchmarks/run.py --cpu haswell`.
 *
 * Why: a library that picks its kernels from CPUID at run time cannot always be told
 * to stop at AVX2.  JAX 0.10's products run YNNPACK's `dot_fp32_*_avx512` kernels and
 * XLA code on zmm registers whatever `--xla_cpu_max_isa=AVX2` says (seen with gdb),
 * so an "AVX2" run timed JAX at AVX-512 speed.
 *
 * How: Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, the `cpuid_fault` flag of
 * /proc/cpuinfo) turns every CPUID instruction of this thread, and of the threads and
 * processes it starts, into a SIGSEGV.  The handler runs the real CPUID with faulting
 * briefly off, clears the AVX-512, AMX, AVX10 and AVX-VNNI bits, and steps over the
 * instruction.  The process's own SIGSEGV handlers (gcc's cc1 and Python's faulthandler
 * install them) are recorded instead of installed, and every other SIGSEGV goes to the
 * one recorded last, or to the default action, as if this library were absent.
 * execve turns faulting off again; a child keeps the mask because it inherits
 * LD_PRELOAD.
 *
 * What stays: glibc chose its string functions before this constructor ran, and
 * XGETBV still reports the ZMM state enabled; libraries ask CPUID first.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef int sigaction_fn(int, const struct sigaction *, struct sigaction *);

static sigaction_fn *real_sigaction;
static int installed;
/* what the process asked for SIGSEGV: what was there before, then its own calls */
static struct sigaction program_action;

static void real_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4])
{
    __asm__ volatile("cpuid"
                     : "=a"(out[0]), "=b"(out[1]), "=c"(out[2]), "=d"(out[3])
                     : "a"(leaf), "c"(subleaf));
}

#define BIT(n) (1u << (n))

/* Leaf 7's feature bits (Intel SDM vol. 2A, CPUID): what an AVX2 CPU lacks. */
static void hide_features(uint32_t leaf, uint32_t subleaf, uint32_t r[4])
{
    if (leaf != 7)
        return;
    if (subleaf == 0) {
        /* EBX: avx512f, dq, ifma, pf, er, cd, bw, vl */
        r[1] &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        /* ECX: avx512_vbmi, vbmi2, vnni, bitalg, vpopcntdq */
        r[2] &= ~(BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14));
        /* EDX: avx512_4vnniw, 4fmaps, vp2intersect, amx-bf16, avx512_fp16, amx-tile, amx-int8 */
        r[3] &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
    } else if (subleaf == 1) {
        /* EAX: avx-vnni, avx512_bf16; EDX: avx10 */
        r[0] &= ~(BIT(4) | BIT(5));
        r[3] &= ~BIT(19);
    }
}

static int set_cpuid_faulting(int on)
{
    return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1);
}

/* Any other SIGSEGV: the process's handler, or its default action (the faulting
 * instruction runs again after this returns, now without this handler). */
static void pass_on(int signal, siginfo_t *info, void *context)
{
    struct sigaction action = program_action;
    if (action.sa_flags & SA_RESETHAND) {
        memset(&program_action, 0, sizeof program_action);
        program_action.sa_handler = SIG_DFL;
    }
    if (action.sa_flags & SA_SIGINFO) {
        action.sa_sigaction(signal, info, context);
    } else if (action.sa_handler != SIG_DFL && action.sa_handler != SIG_IGN) {
        action.sa_handler(signal);
    } else {
        struct sigaction default_action;
        memset(&default_action, 0, sizeof default_action);
        default_action.sa_handler = SIG_DFL;
        real_sigaction(SIGSEGV, &default_action, NULL);
    }
}

static void on_segv(int signal, siginfo_t *info, void *context)
{
    greg_t *regs = ((ucontext_t *)context)->uc_mcontext.gregs;
    /* a faulting CPUID is a general-protection fault (SI_KERNEL) at a readable rip */
    const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {
        uint32_t r[4], leaf = (uint32_t)regs[REG_RAX], subleaf = (uint32_t)regs[REG_RCX];
        set_cpuid_faulting(0);
        real_cpuid(leaf, subleaf, r);
        set_cpuid_faulting(1);
        hide_features(leaf, subleaf, r);
        regs[REG_RAX] = r[0];
        regs[REG_RBX] = r[1];
        regs[REG_RCX] = r[2];
        regs[REG_RDX] = r[3];
        regs[REG_RIP] += 2;
        return;
    }
    pass_on(signal, info, context);
}

/* The process's own calls: SIGSEGV's handler is recorded for pass_on, not installed. */
int sigaction(int signal, const struct sigaction *action, struct sigaction *old)
{
    if (!real_sigaction)
        real_sigaction = (sigaction_fn *)dlsym(RTLD_NEXT, "sigaction");
    if (signal != SIGSEGV || !installed)
        return real_sigaction(signal, action, old);
    if (old)
        *old = program_action;
    if (action)
        program_action = *action;
    return 0;
}

sighandler_t signal(int signal, sighandler_t handler)
{
    struct sigaction action, old;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (sigaction(signal, &action, &old) != 0)
        return SIG_ERR;
    return old.sa_handler;
}

__attribute__((constructor)) static void install(void)
{
    struct sigaction action;
    real_sigaction = (sigaction_fn *)dlsym(RTLD_NEXT, "sigaction");
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;   /* a stack overflow's handler needs its stack */
    sigemptyset(&action.sa_mask);
    if (real_sigaction(SIGSEGV, &action, &program_action) != 0 || set_cpuid_faulting(1) != 0) {
        fprintf(stderr, "hide_avx512: this kernel or CPU has no CPUID faulting; "
                        "AVX-512 stays visible\n");
        real_sigaction(SIGSEGV, &program_action, NULL);
        return;
    }
    installed = 1;
}
