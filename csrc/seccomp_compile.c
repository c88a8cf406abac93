/* Seccomp policy -> classic BPF with libseccomp, in the host process. */
#include "seccomp_compile.h"

#include <errno.h>
#include <seccomp.h>
#include <sys/syscall.h>
#include <unistd.h>

static int set_arches(scmp_filter_ctx ctx, const uint32_t *arches, size_t n_arches)
{
    int keep_native = 0;
    for (size_t i = 0; i < n_arches; i++) {
        if (arches[i] == seccomp_arch_native()) {
            keep_native = 1;
            continue;
        }
        int r = seccomp_arch_add(ctx, arches[i]);
        if (r < 0 && r != -EEXIST)
            return r;
    }
    return keep_native || n_arches == 0 ? 0 : seccomp_arch_remove(ctx, SCMP_ARCH_NATIVE);
}

static int add_rule(scmp_filter_ctx ctx, const struct sbx_seccomp_rule *rule)
{
    struct scmp_arg_cmp conds[6];
    if (rule->n_conds > 6)
        return -EINVAL;
    for (uint32_t i = 0; i < rule->n_conds; i++) {
        conds[i].arg = rule->conds[i].arg;
        conds[i].op = (enum scmp_compare)rule->conds[i].op;
        conds[i].datum_a = rule->conds[i].value;
        conds[i].datum_b = rule->conds[i].value_two;
    }
    return seccomp_rule_add_array(ctx, rule->action, rule->syscall, rule->n_conds, conds);
}

int sbx_seccomp_compile(uint32_t default_action, uint32_t bad_arch_action, const uint32_t *arches,
                        size_t n_arches, const struct sbx_seccomp_rule *rules, size_t n_rules, int fd,
                        int *failed)
{
    *failed = -1;
    scmp_filter_ctx ctx = seccomp_init(default_action);
    if (!ctx)
        return -EINVAL;
    int r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, bad_arch_action);
    if (r == 0)
        r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    if (r == 0)
        r = set_arches(ctx, arches, n_arches);
    for (size_t i = 0; r == 0 && i < n_rules; i++) {
        r = add_rule(ctx, &rules[i]);
        /* EEXIST for an ALLOW rule: seen with two conditional ALLOW rules
         * of socket (podman's profile): on x86, where socket is also
         * socketcall(SYS_SOCKET) whose arguments are in memory, both
         * become the same rule (the prologue gives that route the default
         * action anyway).  That ALLOW rule is then left out on every ABI:
         * stricter, never looser; other actions still fail. */
        if (r == -EEXIST && rules[i].action == SCMP_ACT_ALLOW)
            r = 0;
        if (r < 0)
            *failed = (int)i;
    }
    if (r == 0)
        r = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    return r;
}

int sbx_seccomp_syscall(const char *name)
{
    return seccomp_syscall_resolve_name(name);
}

int sbx_seccomp_syscall_arch(uint32_t arch, const char *name)
{
    return seccomp_syscall_resolve_name_arch(arch, name);
}

uint32_t sbx_seccomp_arch(const char *name)
{
    return seccomp_arch_resolve_name(name);
}

int sbx_x32_missing(void)
{
    return syscall(0x40000000L | SYS_getpid) < 0 && errno == ENOSYS;
}
