/* Library entry points over shared/bench/ref_dma.c, compiled with it as one translation unit
 * (-I shared/bench), so BenchmarkDotNet times the translated-DMA floor beside the C# DMA rows.
 * Everything below uses ref_dma.c's table, map4k and walk: a 4-level walk of the second-level layout
 * plus a memcpy from a flat arena, no IOTLB, no locks.
 *   rd_setup:            PAGES 4K pages at 0x10000000 + i*4K -> arena i*4K, arena bytes set to 1 (the program's main).
 *   rd_read_pass:        the program's timed loop over a caller's IOVA array, into a caller's buffer.
 *   rd_gather_pass:      scatter-gather reads: SEGS walks + SEGS memcpys per gather, back to back.
 *   rd_unmap_remap_pass: clear the leaf entry of each IOVA (iommu_unmap's page-table work) and map it back.
 *   gcc -O2 -march=native -shared -fPIC -I ../shared/bench -o libref_dma.so ref_dma_shim.c */
#include <stdint.h>
/* The program's loop inlines walk; the passes below get the same code (see ref_pagetable_shim.c). */
static inline uint64_t walk(uint64_t iova) __attribute__((always_inline));

#define main ref_dma_main
#include "ref_dma.c"
#undef main

#define RD_BASE 0x10000000ull
static uint8_t *rd_mem;

/* Builds the table and arena as the program's main does; 0 on success. */
int rd_setup(size_t pages) {
  free(tab);
  free(rd_mem);
  nf = 0;
  tab = aligned_alloc(4096, (pages / 512 + pages / 262144 + 16) * 4096ull);
  rd_mem = aligned_alloc(4096, pages * 4096ull);
  if (!tab || !rd_mem) return 1;
  root = alloc_t();
  memset(rd_mem, 1, pages * 4096ull);
  for (size_t i = 0; i < pages; i++) map4k(RD_BASE + i * 4096, i * 4096);
  return 0;
}

/* N reads of LEN bytes; the sum of each read's first byte, 0 when an IOVA is not mapped. The
 * destination is the caller's (the C# rows read into a managed buffer), so the copy cannot be elided. */
uint64_t rd_read_pass(const uint64_t *iv, size_t n, size_t len, uint8_t *dst) {
  uint64_t sink = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t pa = walk(iv[i]);
    if (pa == ~0ull) return 0;
    memcpy(dst, rd_mem + pa, len);
    sink += dst[0];
  }
  return sink;
}

/* GATHERS gathers of SEGS segments of LEN bytes at consecutive IOVAs of IV, landing back to back in DST. */
uint64_t rd_gather_pass(const uint64_t *iv, size_t gathers, size_t segs, size_t len, uint8_t *dst) {
  uint64_t sink = 0;
  for (size_t g = 0; g < gathers; g++) {
    uint8_t *d = dst;
    for (size_t s = 0; s < segs; s++, d += len) {
      uint64_t pa = walk(*iv++);
      if (pa == ~0ull) return 0;
      memcpy(d, rd_mem + pa, len);
    }
    sink += dst[0];
  }
  return sink;
}

/* The leaf entry of iova, or 0 when a table on the way is missing. */
static uint64_t *leaf_entry(uint64_t iova) {
  uint64_t t = root;
  for (int l = 4; l > 1; l--) {
    uint64_t e = T(t)[(iova >> (12 + 9 * (l - 1))) & 511];
    if (!(e & 3)) return 0;
    t = (e & ADDR) >> 12;
  }
  return &T(t)[(iova >> 12) & 511];
}

/* For each IOVA: clear its leaf entry (unmap4k of ref_pagetable.c), then map it back to its arena
 * page. Returns the bytes unmapped, 0 when an IOVA was not mapped. */
uint64_t rd_unmap_remap_pass(const uint64_t *iv, size_t n) {
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t *e = leaf_entry(iv[i]);
    if (!e || !*e) return 0;
    *e = 0;
    total += 4096;
    map4k(iv[i], iv[i] - RD_BASE);
  }
  return total;
}
