/* nbdkit-raid: the management path's entry points for the server's own
 * decisions about members that come and go (away.c).  Each runs under the
 * management lock, like every request (array.h), and re-checks under the
 * state lock that nothing changed since the caller looked. */
#ifndef RAIDCORE_MANAGE_H
#define RAIDCORE_MANAGE_H

#include <stddef.h>
#include <stdint.h>

struct raid_array;
struct member;
struct raid_sb;

/* `add` restricted to an absent member of this array (a spec given at the
 * start that could not be reached then).  0; ENODEV when spec is something
 * else (not used); or the errno of opening it (try again later). */
int manage_rejoin_spec (struct raid_array *a, const char *spec, char *err, size_t errlen);

/* Away member t, reconnected as m, whose own newest record is own: it is
 * back (stale, judged for a delta), its rejoin begins.  0, or ESTALE when
 * it is no longer that away member. */
int manage_member_back (struct raid_array *a, int t, struct member *m,
                        const struct raid_sb *own);

/* Away member t (away since away_ns) is written off: faulty, a spare takes
 * its role.  0, or ESTALE when it came back or changed meanwhile. */
int manage_write_off (struct raid_array *a, int t, uint64_t away_ns);

#endif
