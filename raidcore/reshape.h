/* nbdkit-raid: live reshape (theory in reshape.c). */
#ifndef RAIDCORE_RESHAPE_H
#define RAIDCORE_RESHAPE_H

#include <stddef.h>

#include "array.h"
#include "job.h"

struct raid_array;

/* The reshape job (job.h). */
extern const struct sync_ops reshape_sync_ops;

/* At assembly: a reshape record makes the router route to both layouts,
 * split at the durable position.  0, or -1 with a message. */
int reshape_assemble (struct raid_array *a, char *err, size_t errlen);

/* Prepare (management lock held): validate, open and vet the members to
 * add, choose direction and room, then record the frozen reshape durably
 * and route to both layouts, all visible at once; the reshape job is begun
 * frozen.  Refusals change nothing.  0 or an errno with a message. */
int reshape_prepare (struct raid_array *a, const struct raid_reshape_req *req,
                     char *err, size_t errlen);

/* Whether the reshape can run: the members the target needs are usable
 * (state lock held).  0, or ENODEV/EIO with a message. */
int reshape_check_start (struct raid_array *a, char *err, size_t errlen);

/* Record running / frozen in the reshape record when it differs (state lock
 * held; commits). */
void reshape_record_state (struct raid_array *a, bool running);

/* Abort a frozen reshape that has not moved data (management lock held):
 * added members become spares again, the router has one layout.  0, or
 * EBUSY/EIO with a message. */
int reshape_abort (struct raid_array *a, char *err, size_t errlen);

/* The reshape part of status (state lock held). */
void reshape_status (struct raid_array *a, struct raid_status *st);

#endif
