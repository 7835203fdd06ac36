/*
 * perturb.h — test-only schedule perturbation of the lock-free windows.
 *
 * DBPOOL_PERTURB() marks a place where another thread's step between two
 * of this thread's steps would matter: between a load of a park word and
 * the compare-and-swap that acts on it, between a fast release's last
 * write and the swap that publishes it, around the pool lock. In a normal
 * build it is nothing at all (the objects are the same as without it).
 * Configured with -DDBPOOL_PERTURB=ON (which defines DBPOOL_PERTURBED;
 * tests only, never a release), each mark may spin, yield or sleep a few
 * microseconds, at random, so that on a machine with two cores the other
 * threads' steps land inside these few-instruction windows far more often
 * than they would by chance. See docs/testing.md, "Schedule perturbation".
 */
#ifndef DBPOOL_PERTURB_H
#define DBPOOL_PERTURB_H

#ifdef DBPOOL_PERTURBED
/* perturb.c: spin, yield or sleep, or nothing, at random (a thread-local
 * generator); cancellation stays as it was (no cancellation point). */
void dbpool__perturb(void);
#define DBPOOL_PERTURB() dbpool__perturb()
#else
#define DBPOOL_PERTURB() ((void)0)
#endif

#endif
