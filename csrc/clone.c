/* clone3 with a function to run in the child (see clone.h). */
#include "clone.h"

#include <errno.h>
#include <sys/syscall.h>

long sbx_clone3_run(struct clone_args *args, int (*fn)(void *), void *arg)
{
#if defined(__x86_64__)
    /* fn and arg in callee-saved registers: the kernel preserves every
     * register but rax, rcx and r11 across syscall, in the child too.
     * The child starts with rsp = stack + stack_size (16-byte aligned),
     * clears the frame pointer, calls fn, and exits with its result. */
    register long r12 __asm__("r12") = (long)fn;
    register long r13 __asm__("r13") = (long)arg;
    long ret;
    __asm__ volatile("syscall\n\t"
                     "testq %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xorl %%ebp, %%ebp\n\t"
                     "movq %%r13, %%rdi\n\t"
                     "callq *%%r12\n\t"
                     "movl %%eax, %%edi\n\t"
                     "movl %[exit_nr], %%eax\n\t"
                     "syscall\n\t"
                     "hlt\n"
                     "1:\n\t"
                     : "=a"(ret)
                     : "0"((long)SYS_clone3), "D"(args), "S"(sizeof(*args)), "r"(r12),
                       "r"(r13), [exit_nr] "i"(SYS_exit)
                     : "rcx", "r11", "rdx", "memory");
    return ret;
#else
    (void)args;
    (void)fn;
    (void)arg;
    return -ENOSYS;
#endif
}
