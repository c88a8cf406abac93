#ifndef SBX_SETUP_H
#define SBX_SETUP_H

#include "sbx.h"

/* Receive the plan on SBX_FD_CONTROL and set the container up (with
 * early_netns, start making the network namespace before the plan is in).  Returns
 * when done (the caller closes SBX_FD_ERROR to say so); on failure reports
 * on SBX_FD_ERROR and exits.  Runs in sbx-init, before the init loop. */
void sbx_setup(int early_netns);

#endif
