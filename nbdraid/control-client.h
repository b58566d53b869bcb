/* nbdraid: the subcommands that talk to a running server through its control
 * socket (protocol: nbdkit-raid-control(7)).
 */
#ifndef NBDRAID_CONTROL_CLIENT_H
#define NBDRAID_CONTROL_CLIENT_H

#include <stddef.h>

#include "cli.h"

/* One subcommand per op of the protocol (protocol.h: status, reshape,
 * start, freeze, abort, check, repair, wait, fail, remove, add, replace,
 * resize, set), named after it.  Each reads its options, then needs the
 * socket (-C or NBDRAID_CONTROL; a usage error without), builds its
 * requests with the protocol module and prints the result (cli.h).
 * Returns the exit status: 0 success, 1 the server refused or the request
 * failed (also a request the protocol's checks refuse before connecting,
 * and a connection failure), 2 usage error, and the codes of status --test
 * and wait (cli.h). */
extern const struct subcommand control_subcommands[];
extern const size_t control_nsubcommands;

#endif
