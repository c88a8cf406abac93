/* The PLAN message -> struct sbx_plan (pointers into the message). */
#include "plan.h"

#include <errno.h>
#include <string.h>

/* The string at offset off of the string area, or NULL; NULL on a bad offset
 * is caught by the caller through *bad. */
static const char *string_at(const char *strings, uint32_t len, uint32_t off, int *bad)
{
    if (off == SBX_NO_STRING)
        return NULL;
    if (off >= len) {
        *bad = 1;
        return NULL;
    }
    return strings + off;
}

int sbx_plan_parse(char *buf, size_t len, struct sbx_plan *plan, struct sbx_mount_op *ops, int *tree_fds,
                   size_t max_ops)
{
    const struct sbx_plan_hdr *h = (const struct sbx_plan_hdr *)buf;
    if (len < sizeof(*h))
        return -EBADMSG;
    if (h->n_mounts > max_ops)
        return -E2BIG;
    size_t records = (size_t)h->n_mounts * sizeof(struct sbx_mount_rec);
    const uint32_t lens[4] = {h->filter_len, h->init_filter_len, h->launcher_filter_len,
                              h->clone3_filter_len};
    size_t start = sizeof(*h);
    for (int i = 0; i < 4; i++) {
        if (lens[i] % 8 || lens[i] > SBX_MAX_FILTER)
            return -EBADMSG;
        start += lens[i];
    }
    if (start + records + h->strings_len != len || h->strings_len == 0 || buf[len - 1] != '\0')
        return -EBADMSG;
    const struct sbx_mount_rec *recs = (const struct sbx_mount_rec *)(buf + start);
    const char *strings = buf + start + records;
    int bad = 0;
    memset(plan, 0, sizeof(*plan));
    plan->unshare_flags = h->unshare_flags;
    plan->flags = h->flags;
    plan->fault_step = h->fault_step;
    plan->fault_errno = h->fault_errno;
    plan->hostname = string_at(strings, h->strings_len, h->hostname, &bad);
    plan->base_dir = string_at(strings, h->strings_len, h->base_dir, &bad);
    plan->rootfs = string_at(strings, h->strings_len, h->rootfs, &bad);
    plan->filter = h->filter_len ? buf + sizeof(*h) : NULL;
    plan->filter_len = h->filter_len;
    plan->init_caps = h->init_caps;
    plan->init_filter = h->init_filter_len ? buf + sizeof(*h) + h->filter_len : NULL;
    plan->init_filter_len = h->init_filter_len;
    plan->root_propagation = h->root_propagation;
    const uint32_t join[SBX_N_JOIN] = {h->join_net, h->join_ipc, h->join_uts, h->join_mnt, h->join_cgroup};
    for (int i = 0; i < SBX_N_JOIN; i++)
        plan->join[i] = string_at(strings, h->strings_len, join[i], &bad);
    const char *after = buf + sizeof(*h) + h->filter_len + h->init_filter_len;
    plan->launcher_filter = h->launcher_filter_len ? after : NULL;
    plan->launcher_filter_len = h->launcher_filter_len;
    plan->clone3_filter = h->clone3_filter_len ? after + h->launcher_filter_len : NULL;
    plan->clone3_filter_len = h->clone3_filter_len;
    plan->max_forkers = h->max_forkers;
    for (uint32_t i = 0; i < h->n_mounts; i++) {
        ops[i].kind = (int)recs[i].kind;
        ops[i].flags = recs[i].flags;
        ops[i].source = string_at(strings, h->strings_len, recs[i].source, &bad);
        ops[i].target = string_at(strings, h->strings_len, recs[i].target, &bad);
        ops[i].data = string_at(strings, h->strings_len, recs[i].data, &bad);
        if (!ops[i].target)
            bad = 1;
        tree_fds[i] = -1;
    }
    plan->mounts = ops;
    plan->n_mounts = h->n_mounts;
    plan->tree_fds = tree_fds;
    return bad || !plan->base_dir ? -EBADMSG : 0;
}
