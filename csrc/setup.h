#ifndef SBX_SETUP_H
#define SBX_SETUP_H

#include "sbx.h"

/* Receive the plan on SBX_FD_CONTROL and set the container up (with
 * early_netns, start making the network namespace before the plan is in).  Returns
 * the plan when done (the caller closes SBX_FD_ERROR to say so); it stays
 * valid for the init's life (its seccomp filter is installed in every
 * command).  On failure reports on SBX_FD_ERROR and exits.  Runs in
 * sbx-init, before the init loop. */
const struct sbx_plan *sbx_setup(int early_netns);

#endif
