/* nbdkit-raid: the control-socket server (protocol: nbdkit-raid-control(7)).
 *
 * Life cycle, matching nbdkit's (threads do not survive its daemonizing
 * fork, and get_ready is the last place whose errors the user sees):
 *
 *   get_ready:   control_bind (path)         socket file exists, listening
 *   after_fork:  control_start_thread (a)    requests are served from here on
 *   cleanup:     control_stop ()             before raid_array_close (a)
 *
 * Connections made between control_bind and control_start_thread wait in
 * the listen backlog and are served once the threads run.  Nothing here
 * calls nbdkit: messages go to raid_log (the plugin routes them to nbdkit's
 * log), so the server can be linked into tests without nbdkit.
 */
#ifndef NBDKIT_RAID_CONTROL_H
#define NBDKIT_RAID_CONTROL_H

#include <stddef.h>

struct raid_array;

/* Longest request line accepted, in bytes, not counting its line end ('\n',
 * or "\r\n").  A longer line gets an EPROTO reply and its connection is
 * closed. */
#define CONTROL_MAX_LINE (64u << 10)
#define CONTROL_BUF (CONTROL_MAX_LINE + 2)     /* the longest line and its end */

/* Connections served at once; one more gets an EAGAIN reply and is closed. */
#define CONTROL_MAX_CLIENTS 64

/* Create the UNIX socket at path (should be absolute: nbdkit changes to /
 * before serving), mode 0600, and listen on it.  A socket file that nobody
 * listens on (a stale one) is removed first; a path where a server answers,
 * or that exists and is not a socket, is refused.  Returns 0, or -1 with a
 * one-line message in err (nothing is left behind then).  Call once. */
int control_bind (const char *path, char *err, size_t errlen);

/* Start serving the socket control_bind created, on array a (which must
 * stay valid until control_stop returns).  Returns 0, or -1 after logging
 * the reason (raid_log).  A no-op returning 0 when control_bind was not
 * called (no control= parameter). */
int control_start_thread (struct raid_array *a);

/* Stop serving: wake and join every thread (requests in progress finish
 * first; a `wait` in progress returns within CONTROL_WAIT_SLICE_MS), close
 * every connection and the socket, and unlink the socket file if it is
 * still the one control_bind created.  Safe to call in any state, also
 * without control_bind or control_start_thread, and more than once. */
void control_stop (void);

/* How often a `wait` request re-checks for shutdown and client hang-up. */
#define CONTROL_WAIT_SLICE_MS 200

/* How long one reply may take to write before the client, which is not
 * reading, is disconnected. */
#define CONTROL_WRITE_TIMEOUT_MS 10000

#endif
