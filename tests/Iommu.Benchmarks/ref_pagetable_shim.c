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

/* ---- A queued-invalidation round trip: what iommu_unmap adds to unmap4k on VT-d -------------------
 * iommu_unmap = clear the leaf + iotlb_sync, and the sync is qi_submit_sync: under the queue's lock,
 * write the invalidation descriptor and a wait descriptor (32-byte descriptors, as in scalable mode),
 * move the tail; the unit (here a function called at the tail write, under its own register lock)
 * executes both — a page-selective IOTLB invalidation probes the sets of the named pages of a
 * set-associative IOTLB (4,096 entries, 8 ways, tags of DID and page) and the wait descriptor writes
 * the status word — and the driver checks the fault status and the status word. No logging, no
 * statistics, no checks a minimal program would not make. The IOTLB is empty, as in the C# rows
 * (nothing did DMA). */
#define QI_ENTRIES 256
#define TLB_SETS 512
#define TLB_WAYS 8
static uint64_t qi_ring[QI_ENTRIES * 4];
static unsigned qi_tail, qi_head;
static volatile uint32_t qi_status, hw_fsts;
static uint32_t qi_seq;
static uint64_t tlb_tag[TLB_SETS][TLB_WAYS]; /* DID << 48 | page + 1; 0 = empty */
static volatile int q_lock, hw_lock;

static inline void spin_lock(volatile int *l) { while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) __builtin_ia32_pause(); }
static inline void spin_unlock(volatile int *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }

/* The unit: execute descriptors from head to tail (an IQT write). */
static __attribute__((noinline)) void hw_iqt_write(unsigned tail) {
  spin_lock(&hw_lock);
  while (qi_head != tail) {
    uint64_t *d = &qi_ring[qi_head * 4];
    switch (d[0] & 0xf) {
    case 2: { /* IOTLB invalidation, page-selective: DID in 31:16, ADDR/AM in q1 */
      uint64_t did = (d[0] >> 16) & 0xffff, page = d[1] >> 12, n = 1ull << (d[1] & 0x3f);
      for (uint64_t p = page; p < page + n; p++) {
        uint64_t *set = tlb_tag[p & (TLB_SETS - 1)], tag = (did << 48) | (p + 1);
        for (int w = 0; w < TLB_WAYS; w++) if (set[w] == tag) set[w] = 0;
      }
      break;
    }
    case 5: /* wait: SW writes the status data (63:32) at the address in q1 */
      if (d[0] & (1 << 5)) *(volatile uint32_t *)(uintptr_t)d[1] = (uint32_t)(d[0] >> 32);
      break;
    default:
      hw_fsts |= 0x10; /* IQE */
      spin_unlock(&hw_lock);
      return;
    }
    qi_head = (qi_head + 1) % QI_ENTRIES;
  }
  spin_unlock(&hw_lock);
}

static inline void qi_desc(unsigned i, uint64_t q0, uint64_t q1) {
  uint64_t *d = &qi_ring[i * 4];
  d[0] = q0; d[1] = q1; d[2] = 0; d[3] = 0;
}

/* qi_flush_iotlb(DID, addr, AM, PSI) + qi_submit_sync. Returns 0, or 1 when the unit refused it. */
static inline int qi_flush_psi(uint64_t did, uint64_t addr, unsigned am) {
  spin_lock(&q_lock);
  uint32_t seq = ++qi_seq;
  qi_status = 1; /* QI_IN_USE */
  unsigned i = qi_tail, w = (i + 1) % QI_ENTRIES;
  qi_desc(i, 2 | (3ull << 4) | (did << 16), addr | am);      /* type 2, G=11 (page-selective) */
  qi_desc(w, 5 | (1 << 5) | ((uint64_t)seq << 32), (uint64_t)(uintptr_t)&qi_status); /* wait, SW */
  qi_tail = (w + 1) % QI_ENTRIES;
  hw_iqt_write(qi_tail);
  int bad = (hw_fsts & 0x10) != 0 || qi_status != seq;
  spin_unlock(&q_lock);
  return bad;
}

/* N iommu_unmap(4K): unmap4k then a page-selective invalidation and its wait (DriverPath64K.IommuUnmap4K). */
int rp_unmap_sync_pass(const uint64_t *order, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint64_t iova = shim_base + (order[i] << 12);
    if (unmap4k(iova) != 4096) return 4;
    if (qi_flush_psi(1, iova, 0)) return 5;
  }
  return 0;
}

/* DeferredUnmap256: `batches` x 256 contiguous 4K pages (2 MiB apart, as the C# rows), each page
 * unmapped then, with per_page, synced at once, else one 1 MiB page-selective sync per batch. The
 * pages must be mapped (rp_map_batches). Returns 0 on success. */
int rp_unmap256_pass(int batches, int per_page) {
  for (int b = 0; b < batches; b++) {
    uint64_t base = shim_base + (uint64_t)b * (512ull << 12);
    for (unsigned p = 0; p < 256; p++) {
      if (unmap4k(base + ((uint64_t)p << 12)) != 4096) return 4;
      if (per_page && qi_flush_psi(1, base + ((uint64_t)p << 12), 0)) return 5;
    }
    if (!per_page && qi_flush_psi(1, base, 8)) return 5;
  }
  return 0;
}

/* Maps what rp_unmap256_pass unmaps (not timed). */
int rp_map_batches(int batches) {
  for (int b = 0; b < batches; b++) {
    uint64_t base = shim_base + (uint64_t)b * (512ull << 12);
    for (unsigned p = 0; p < 256; p++)
      if (map4k(base + ((uint64_t)p << 12), shim_pbase + (((uint64_t)b * 256 + p) << 12), PTE_R | PTE_W)) return 2;
  }
  return 0;
}
