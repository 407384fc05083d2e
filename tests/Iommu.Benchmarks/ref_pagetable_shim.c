/* Library entry points over shared/bench/ref_pagetable.c, compiled with it as one translation unit
 * (-I shared/bench), so BenchmarkDotNet can time the C floor's own map4k / iova_to_phys / unmap4k
 * loops with the same iteration setup as the C# page table (PageTable64K / PageTable1M). Each pass
 * is the body of the C program's timed loop, with its bases and checks.
 *   gcc -O2 -march=native -shared -fPIC -I ../shared/bench -o libref_pagetable.so ref_pagetable_shim.c */
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
