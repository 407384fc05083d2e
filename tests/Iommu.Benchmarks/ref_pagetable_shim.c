/* Library entry points over shared/bench/ref_pagetable.c, compiled with it as one translation unit
 * (-I shared/bench), so BenchmarkDotNet times the C floor with the same iteration setup as the C#
 * page table. Everything below uses ref_pagetable.c's arena, frames and index math.
 *   rp_*: the C program's own map4k / iova_to_phys / unmap4k loops, with its bases and checks
 *         (PageTable64K / PageTable1M).
 *   rb_*: 256 x 4 KiB ranges 1 MiB apart (PageTableBatches): a map walks once to the leaf table and
 *         writes 256 entries, keeping any entry already set; an unmap walks once and clears 256.
 *         rb_map_unmap_passes repeats (map every range, then unmap every range) in one call, as the
 *         hot C# row does, so that one timed invocation lasts well over 100 us.
 *   gcc -O2 -march=native -shared -fPIC -I ../shared/bench -o libref_pagetable.so ref_pagetable_shim.c */
/* The standalone program inlines map4k / iova_to_phys / unmap4k into main's loops (one caller each);
 * with the passes below as second callers gcc would keep them out of line, and the floor would be
 * slower than the program. These declarations, before the unchanged definitions, force the same
 * inlining; the benchmark run checks the shim rows against the program itself. */
#include <stdint.h>
static inline int map4k(uint64_t iova, uint64_t pa, uint64_t prot) __attribute__((always_inline));
static inline uint64_t iova_to_phys(uint64_t iova) __attribute__((always_inline));
static inline uint64_t unmap4k(uint64_t iova) __attribute__((always_inline));

#define main ref_pagetable_main
#include "ref_pagetable.c"
#undef main

static const uint64_t shim_base = 0x40000000ull, shim_pbase = 0x200000000ull;

/* An empty table with room for n pages (the arena grows only when n grows). */
void rp_reset(size_t n) {
  size_t frames = n / 256 + 64;
  if (frames > arena_frames) {
    free(arena);
    arena_frames = frames;
    arena = aligned_alloc(4096, arena_frames * 4096);
  }
  next_frame = 0;
  root = alloc_frame();
}

int rp_map_pass(const uint64_t *order, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint64_t k = order[i];
    if (map4k(shim_base + (k << 12), shim_pbase + (k << 12), PTE_R | PTE_W)) return 2;
  }
  return 0;
}

uint64_t rp_lookup_pass(const uint64_t *order, size_t n) {
  uint64_t sink = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t k = order[n - 1 - i];
    uint64_t p = iova_to_phys(shim_base + (k << 12) + 8);
    if (p != shim_pbase + (k << 12) + 8) return 0;
    sink += p;
  }
  return sink;
}

int rp_unmap_pass(const uint64_t *order, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (unmap4k(shim_base + (order[i] << 12)) != 4096) return 4;
  return 0;
}

#define RANGE (256ull << 12)
#define RANGE_IOVA 0x4000000000ull

/* The level-1 table holding iova, allocating tables on the way when asked (map4k's walk). */
static uint64_t *leaf_table(uint64_t iova, int alloc) {
  uint64_t *t = frame(root);
  for (int l = LEVELS; l > 1; l--) {
    uint64_t *e = &t[idx(iova, l)];
    if (!(*e & (PTE_R | PTE_W))) {
      if (!alloc) return 0;
      *e = alloc_frame() | PTE_R | PTE_W;
    }
    t = frame(*e & ADDR_MASK);
  }
  return t;
}

/* A table whose leaf tables for `ranges` ranges exist, as in the C# setup. */
void rb_init(int ranges) {
  rp_reset((size_t)ranges * 256);
  for (int r = 0; r < ranges; r++) leaf_table(RANGE_IOVA + r * RANGE, 1);
}

/* noinline: a pass stays a pass inside rb_map_unmap_passes (no stores merged across passes). */
__attribute__((noinline)) void rb_map_pass(int ranges) {
  for (int r = 0; r < ranges; r++) {
    uint64_t iova = RANGE_IOVA + r * RANGE, pa = shim_pbase + r * RANGE;
    uint64_t *e = leaf_table(iova, 1) + idx(iova, 1);
    for (unsigned i = 0; i < 256; i++, pa += 4096)
      if (!e[i]) e[i] = (pa & ADDR_MASK) | PTE_R | PTE_W;
  }
}

__attribute__((noinline)) uint64_t rb_unmap_pass(int ranges) {
  uint64_t total = 0;
  for (int r = 0; r < ranges; r++) {
    uint64_t iova = RANGE_IOVA + r * RANGE, *t = leaf_table(iova, 0);
    if (!t) continue;
    uint64_t *e = t + idx(iova, 1);
    for (unsigned i = 0; i < 256; i++) e[i] = 0;
    total += RANGE;
  }
  return total;
}

/* passes x (rb_map_pass(ranges), then rb_unmap_pass(ranges)): the hot 256 x 4K row. Returns the
 * bytes the unmaps reported (ranges * passes * RANGE when every range was mapped). */
uint64_t rb_map_unmap_passes(int ranges, int passes) {
  uint64_t total = 0;
  for (int p = 0; p < passes; p++) {
    rb_map_pass(ranges);
    total += rb_unmap_pass(ranges);
  }
  return total;
}
