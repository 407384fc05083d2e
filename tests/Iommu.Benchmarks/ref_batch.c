/* Batch floor for the 256 x 4 KiB benchmarks (PageTableBatches): the table layout and walk of
 * shared/bench/ref_pagetable.c (4 levels, 9 bits a level, VT-d second-level entries in a flat arena
 * of 4 KiB frames), with range operations: map_range walks once to the leaf table and writes 256
 * entries, keeping any entry already set; unmap_range walks once and clears 256 entries. No locks,
 * no flushes, no superpages.
 *
 * The same two sequences as the C# benchmarks:
 *   hot:  16 ranges 1 MiB apart; a pass maps all 16, the next unmaps all 16, again and again (the
 *         Linux generic-pt benchmark maps and unmaps one range in a loop, so its tables are hot);
 *   cold: 4096 ranges 1 MiB apart (8 MiB of leaf entries), map all then unmap all.
 * Leaf tables exist before timing starts, as in the C# setup.
 *
 * Two uses. The benchmark project builds it as a shared library and times rb_map_pass/rb_unmap_pass
 * through BenchmarkDotNet with the same iteration setup as the C# benchmarks (CFloorBatches), so both
 * sides pay the same harness costs. Run alone, it prints ns per 256 x 4 KiB range (median over the
 * passes):  ref-c-batch hot_map_ns=.. hot_unmap_ns=.. cold_map_ns=.. cold_unmap_ns=..
 *   gcc -O2 -march=native -o ref_batch ref_batch.c && ./ref_batch
 *   gcc -O2 -march=native -shared -fPIC -o libref_batch.so ref_batch.c */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PTE_RW 3ull
#define ADDR_MASK 0x000ffffffffff000ull
#define RANGE (256ull << 12)
#define IOVA_BASE 0x4000000000ull
#define PA_BASE 0x200000000ull
#define HOT 16
#define COLD 4096

static uint64_t *arena;
static size_t arena_frames, next_frame;
static const uint64_t arena_pa = 0x100000000ull;
static uint64_t root;

static inline uint64_t *frame(uint64_t pa) { return arena + ((pa - arena_pa) >> 3); }
static uint64_t alloc_frame(void) {
  if (next_frame >= arena_frames) { fprintf(stderr, "arena full\n"); exit(1); }
  uint64_t pa = arena_pa + (next_frame++ << 12);
  memset(frame(pa), 0, 4096);
  return pa;
}
static inline unsigned idx(uint64_t iova, int level) { return (iova >> (12 + 9 * (level - 1))) & 511; }

/* The level-1 table holding iova, allocating tables on the way when asked. */
static uint64_t *leaf_table(uint64_t iova, int alloc) {
  uint64_t *t = frame(root);
  for (int l = 4; l > 1; l--) {
    uint64_t *e = &t[idx(iova, l)];
    if (!(*e & PTE_RW)) {
      if (!alloc) return 0;
      *e = alloc_frame() | PTE_RW;
    }
    t = frame(*e & ADDR_MASK);
  }
  return t;
}

__attribute__((noinline)) static void map_range(uint64_t iova, uint64_t pa) {
  uint64_t *e = leaf_table(iova, 1) + idx(iova, 1);
  for (unsigned i = 0; i < 256; i++, pa += 4096)
    if (!e[i]) e[i] = (pa & ADDR_MASK) | PTE_RW;
}

__attribute__((noinline)) static uint64_t unmap_range(uint64_t iova) {
  uint64_t *t = leaf_table(iova, 0);
  if (!t) return 0;
  uint64_t *e = t + idx(iova, 1);
  for (unsigned i = 0; i < 256; i++) e[i] = 0;
  return RANGE;
}

/* Library entry points: rb_init prepares the arena and the leaf tables of `ranges` ranges; the passes
 * map or unmap ranges [0, ranges). rb_unmap_pass returns the bytes unmapped. */
void rb_init(int ranges) {
  free(arena);
  arena_frames = ranges / 2 + 64;
  arena = aligned_alloc(4096, arena_frames * 4096);
  next_frame = 0;
  root = alloc_frame();
  for (int r = 0; r < ranges; r++) leaf_table(IOVA_BASE + r * RANGE, 1);
}

void rb_map_pass(int ranges) {
  for (int r = 0; r < ranges; r++) map_range(IOVA_BASE + r * RANGE, PA_BASE + r * RANGE);
}

uint64_t rb_unmap_pass(int ranges) {
  uint64_t total = 0;
  for (int r = 0; r < ranges; r++) total += unmap_range(IOVA_BASE + r * RANGE);
  return total;
}

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1e9 + ts.tv_nsec; }
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

/* Median ns per range of `passes` map passes and unmap passes over `ranges` ranges. */
static void run(int ranges, int passes, double *map_ns, double *unmap_ns) {
  double *m = malloc(passes * sizeof(double)), *u = malloc(passes * sizeof(double));
  for (int p = 0; p < passes; p++) {
    double t0 = now();
    for (int r = 0; r < ranges; r++) map_range(IOVA_BASE + r * RANGE, PA_BASE + r * RANGE);
    double t1 = now();
    for (int r = 0; r < ranges; r++)
      if (unmap_range(IOVA_BASE + r * RANGE) != RANGE) exit(3);
    double t2 = now();
    m[p] = (t1 - t0) / ranges;
    u[p] = (t2 - t1) / ranges;
  }
  qsort(m, passes, sizeof(double), cmpd);
  qsort(u, passes, sizeof(double), cmpd);
  *map_ns = m[passes / 2];
  *unmap_ns = u[passes / 2];
  free(m);
  free(u);
}

int main(void) {
  rb_init(COLD);

  double hot_map, hot_unmap, cold_map, cold_unmap;
  run(HOT, 200, &hot_map, &hot_unmap); /* warm-up */
  run(HOT, 20000, &hot_map, &hot_unmap);
  run(COLD, 15, &cold_map, &cold_unmap);
  printf("ref-c-batch hot_map_ns=%.1f hot_unmap_ns=%.1f cold_map_ns=%.1f cold_unmap_ns=%.1f\n",
         hot_map, hot_unmap, cold_map, cold_unmap);
  return 0;
}
