/* Compiling a seccomp policy with libseccomp, in the parent (extension
 * only: sbx-init and its commands never link libseccomp, they install the
 * compiled bytes). */
#ifndef SBX_SECCOMP_COMPILE_H
#define SBX_SECCOMP_COMPILE_H

#include "sbx.h"

/* Compile n_rules rules, in order, for the n_arches audit architectures,
 * into classic BPF written to fd (a binary tree of syscalls: libseccomp's
 * optimize level 2).  Returns 0, or -errno with *failed the index of the
 * rule at fault (-1: the filter or its architectures). */
int sbx_seccomp_compile(uint32_t default_action, uint32_t bad_arch_action, const uint32_t *arches,
                        size_t n_arches, const struct sbx_seccomp_rule *rules, size_t n_rules, int fd,
                        int *failed);

/* libseccomp's number of a syscall name: the native one, a negative
 * pseudo number for a syscall of another ABI only, or -1 if unknown. */
int sbx_seccomp_syscall(const char *name);

/* The number of a syscall name in one ABI (audit arch token; x32 numbers
 * carry 0x40000000), negative if that ABI has no such syscall. */
int sbx_seccomp_syscall_arch(uint32_t arch, const char *name);

/* The audit architecture token of a libseccomp arch name ("x86_64",
 * "x86", "x32", ...), or 0 if unknown. */
uint32_t sbx_seccomp_arch(const char *name);

/* 1 when the kernel has no x32 ABI (an x32 getpid fails with ENOSYS). */
int sbx_x32_missing(void);

#endif
