"""Moving a client's database from one ClickHouse target to another, losing and duplicating
nothing while its events keep flowing.

The protocol (each step recorded in PostgreSQL `client_moves` before the next one starts, so a
run killed at any moment is resumed by running the move again):

1. `started`  -> `copied`: the destination database is created with the client's schema
   (the same migrations, rendered ON CLUSTER for a cluster target) and every table is copied.
   The routers still write to the source, so this copy is a head start, not the answer.
   Re-run: the destination is not live yet, so it is dropped and copied again.
2. `copied`   -> `switched`: one PostgreSQL transaction sets `clients.ch_target` to the
   destination and records the switch; router caches are invalidated at once, and again
   after a grace period (a router that read the old row just before the switch and wrote it
   back to Redis would otherwise keep it for the cache TTL).
3. `switched` -> `fenced`: on the source, `events_base` is renamed `events_base__moving`
   and the move waits until no INSERT into the client's database is running there. From
   then on nothing can add a row to the source: an INSERT from a router that still has the
   old row fails (unknown table) and the router re-reads the client's record and writes that
   batch to its current target instead, without counting a failed attempt
   (`Router._follow_move` in router/service.py; router/writer.py first drops the rows whose
   event the destination holds already, so a redirect never duplicates the delta copy).
   This is how we know every router has stopped writing
   to the old target: not by waiting and hoping, but because the old table no longer exists
   under the name routers write to.
4. `fenced`   -> `delta_copied`: every event of the (now frozen) source whose identity
   (day, name, id: the table's sort key) is not in the destination is copied. A row that
   reached both sides (a batch that landed on the source but whose answer was lost, then
   re-targeted) is kept once. Re-run: the difference is computed again, so copied rows are
   never copied twice.
5. `delta_copied` -> `verified`: every source table is compared with the destination: for
   events, every identity of the source is in the destination and the distinct event ids
   agree; other tables (dlt's batch tables) have equal row counts.
6. `verified` -> `done`: the source database is dropped; an audit row `moved` records the
   counts. Only a verified move ever drops anything of the source.

Modules: `plan` (pure: steps, refusals, comparisons), `store` (PostgreSQL), `copy`
(ClickHouse I/O), `run` (the orchestration shared by the Dagster job and the CLI).
"""
