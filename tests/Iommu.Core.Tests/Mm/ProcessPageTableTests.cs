using CsCheck;
using Iommu.Mm;

namespace Iommu.Core.Tests.Mm;

// The process model's IA-32e tables, read back by walking them: leaf bits as x86-64 Linux writes
// them for user pages, copy-on-write across fork, notifier order, and nothing leaked at exit.
public sealed class ProcessPageTableTests : IDisposable
{
    private const ulong Page = 4096;
    private const ulong P = 1, Rw = 2, Us = 4, A = 0x20, D = 0x40, Xd = 1UL << 63;

    private readonly Platform _platform = new();
    private readonly HostPageAllocator _pages;

    public ProcessPageTableTests() => _pages = HostPageAllocator.ForPlatform(_platform, 4 * Sizes.GiB, 64 * Sizes.MiB);

    public void Dispose() => _platform.Dispose();

    [Fact]
    public void Mlock_over_a_gap_fails_after_locking_the_area_before_it_without_populating_it()
    {
        // apply_vma_lock_flags (5.15 and 6.1): mlock_fixup per area from the start, -ENOMEM at the first gap; do_mlock
        // then returns before __mm_populate. A range starting in the gap locks nothing.
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong va = p.Mmap(4 * Page);
        p.Munmap(va + (2 * Page), Page);

        Assert.Equal(Errno.ENOMEM, p.Mlock(va, 4 * Page));
        Assert.Equal(2, p.LockedVm);
        Assert.Equal(0UL, p.Walk(va).Pte); // locked, not populated

        Assert.Equal(Errno.ENOMEM, p.Mlock(va + (2 * Page), 2 * Page));
        Assert.Equal(2, p.LockedVm);

        // The budget counts the gap's page too: 2 locked + 4 requested - 2 already locked = 4 > 3.
        p.CapIpcLock = false;
        p.RlimitMemlock = 3 * Page;
        Assert.Equal(Errno.ENOMEM, p.Mlock(va, 4 * Page));
        Assert.Equal(2, p.LockedVm);

        Assert.Equal(Errno.None, p.Mlock(va + (3 * Page), Page));
        Assert.Equal(3, p.LockedVm);
        Assert.NotEqual(0UL, p.Walk(va + (3 * Page)).Pte); // populated
    }

    [Fact]
    public void Read_maps_the_zero_page_read_only_and_a_write_maps_an_own_dirty_writable_page()
    {
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong va = p.Mmap(2 * Page);
        Assert.Equal(0UL, p.Walk(va).Pte);

        Assert.Equal(Errno.None, p.Read(va, new byte[8]));
        X86PageWalk r = p.Walk(va);
        Assert.Equal(_pages.ZeroPagePfn, r.Pfn);
        Assert.Equal(P | Us | A | Xd, r.Pte & (P | Rw | Us | A | D | Xd));
        Assert.False(r.Writable);

        Assert.Equal(Errno.None, p.Write(va + 8, [1, 2, 3]));
        X86PageWalk w = p.Walk(va);
        Assert.NotEqual(_pages.ZeroPagePfn, w.Pfn);
        Assert.Equal((w.Pfn << 12) | P | Rw | Us | A | D | Xd, w.Pte & ~(3UL << 9)); // software bits 9-10 aside
        Assert.True(w.Writable && w.User);

        // _PAGE_TABLE (0x67) on every non-leaf level, the PML4 at Pgd.
        Assert.Equal(0x67UL, w.Pml4e & 0xFFF);
        Assert.Equal(0x67UL, w.Pdpte & 0xFFF);
        Assert.Equal(0x67UL, w.Pde & 0xFFF);
        Assert.Equal(w.Pml4e, _platform.Memory.ReadUInt64(p.Pgd + (((va >> 39) & 511) * 8)));
        Assert.Equal(w.PhysicalAddress + 8, p.Walk(va + 8).PhysicalAddress + 0);
    }

    [Fact]
    public void Executable_areas_have_no_XD_and_PROT_NONE_keeps_the_frame_not_present()
    {
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong code = p.Mmap(Page, VmProt.Read | VmProt.Exec);
        ulong data = p.Mmap(Page);
        Assert.Equal(Errno.None, p.Read(code, new byte[1]));
        Assert.Equal(Errno.None, p.Write(data, [9]));
        Assert.False(p.Walk(code).ExecuteDisable);
        Assert.True(p.Walk(data).ExecuteDisable);

        ulong pfn = p.Walk(data).Pfn;
        p.Mprotect(data, Page, VmProt.None);
        Assert.False(p.Walk(data).Present);
        Assert.Equal(pfn, p.Walk(data).Pfn);
        p.Mprotect(data, Page, VmProt.ReadWrite);
        Assert.True(p.Walk(data).Present);
        Assert.False(p.Walk(data).Writable); // private: R/W only from a write fault
        Assert.Equal(Errno.None, p.Write(data, [7]));
        Assert.Equal(pfn, p.Walk(data).Pfn); // the only mapping: reused, not copied
    }

    [Fact]
    public void Fork_shares_private_pages_read_only_until_a_write_breaks_the_sharing()
    {
        using var parent = new ProcessAddressSpace(_pages, "parent");
        ulong va = parent.Mmap(Page);
        Assert.Equal(Errno.None, parent.Write(va, [42]));
        ulong pfn = parent.Walk(va).Pfn;
        using ProcessAddressSpace child = parent.Fork("child");
        Assert.Equal(pfn, child.Walk(va).Pfn);
        Assert.False(parent.Walk(va).Writable);
        Assert.False(child.Walk(va).Writable);
        Assert.False(child.Walk(va).Accessed); // pte_mkold in the child

        Assert.Equal(Errno.None, child.Write(va, [43]));
        Assert.NotEqual(pfn, child.Walk(va).Pfn);
        Assert.True(child.Walk(va).Writable);
        byte[] b = new byte[1];
        Assert.Equal(Errno.None, parent.Read(va, b));
        Assert.Equal(42, b[0]);
        Assert.Equal(Errno.None, parent.Write(va, [44]));
        Assert.Equal(pfn, parent.Walk(va).Pfn); // last mapper reuses
        Assert.Equal(Errno.None, child.Read(va, b));
        Assert.Equal(43, b[0]);
    }

    [Fact]
    public void Fork_copies_a_pinned_page_at_once_and_the_parent_keeps_it_writable()
    {
        using var parent = new ProcessAddressSpace(_pages, "parent");
        ulong va = parent.Mmap(Page);
        Assert.Equal(Errno.None, parent.PinUserPage(va, write: true, out ulong pfn, out bool reserved));
        using ProcessAddressSpace child = parent.Fork("child");
        Assert.True(parent.Walk(va).Writable);
        Assert.Equal(pfn, parent.Walk(va).Pfn);
        Assert.NotEqual(pfn, child.Walk(va).Pfn);
        parent.UnpinUserPage(pfn, reserved);
    }

    [Fact]
    public void Exit_frees_every_table_and_page()
    {
        var p = new ProcessAddressSpace(_pages, "p");
        Assert.Equal(1, _pages.PageTablePages);
        ulong va = p.Mmap(8 * Page);
        Assert.Equal(Errno.None, p.Write(va, new byte[8 * Page]));
        Assert.Equal(4, _pages.PageTablePages);
        Assert.Equal(8, _pages.AllocatedPages);
        p.Exit();
        Assert.Equal(0UL, p.Pgd);
        Assert.Equal(0, _pages.PageTablePages);
        Assert.Equal(0, _pages.AllocatedPages);
    }

    [Fact]
    public void Notifier_hears_each_change_after_the_leaf_changed_and_before_the_page_is_freed_and_release_at_exit()
    {
        var p = new ProcessAddressSpace(_pages, "p");
        ulong va = p.Mmap(4 * Page);
        Assert.Equal(Errno.None, p.Write(va, new byte[4 * Page]));
        ulong pfn = p.Walk(va + Page).Pfn;
        var seen = new List<string>();
        var n = new Recorder((mm, s, e) =>
        {
            Assert.Equal(0UL, mm.Walk(va + Page).Pte); // already cleared
            Assert.Equal(1, _pages.RefCount(pfn)); // not yet freed
            seen.Add($"{s - va:x}-{e - va:x}");
        }, () => seen.Add("release"));
        p.MmuNotifierRegister(n);
        p.Munmap(va + Page, Page);
        Assert.Equal(0, _pages.RefCount(pfn));
        p.Exit();
        Assert.Equal(["1000-2000", "release"], seen);
    }

    // iopf_handle_single's part of the mm: the area's flags decide (a read needs PROT_READ, though a CPU may read a
    // write-only page), then the page is faulted in as a CPU touch would, a COW break telling the notifier.
    [Fact]
    public void HandleMmFault_checks_the_area_flags_then_faults_like_a_cpu_touch()
    {
        using var p = new ProcessAddressSpace(_pages, "p");
        ulong va = p.Mmap(2 * Page);
        ulong wo = p.Mmap(Page, VmProt.Write);
        ulong ro = p.Mmap(Page, VmProt.Read);
        Assert.Equal(Errno.EFAULT, p.HandleMmFault(0x1000, read: true, write: false, exec: false));
        Assert.Equal(Errno.EFAULT, p.HandleMmFault(wo, read: true, write: false, exec: false));
        Assert.Equal(Errno.EFAULT, p.HandleMmFault(ro, read: false, write: true, exec: false));
        Assert.Equal(Errno.EFAULT, p.HandleMmFault(va, read: true, write: false, exec: true));
        Assert.Equal(0UL, p.Walk(ro).Pte);

        Assert.Equal(Errno.None, p.HandleMmFault(va, read: true, write: false, exec: false));
        Assert.Equal(_pages.ZeroPagePfn, p.Walk(va).Pfn);
        Assert.Equal(P | Us | A, p.Walk(va).Pte & (P | Rw | Us | A | D));
        Assert.Equal(Errno.None, p.HandleMmFault(va + Page, read: false, write: true, exec: false));
        Assert.Equal(P | Rw | Us | A | D, p.Walk(va + Page).Pte & (P | Rw | Us | A | D));

        using ProcessAddressSpace child = p.Fork("c");
        ulong shared = p.Walk(va + Page).Pfn;
        var seen = new List<ulong>();
        p.MmuNotifierRegister(new Recorder((_, s, _) => seen.Add(s), () => { }));
        Assert.Equal(Errno.None, p.HandleMmFault(va + Page, read: true, write: true, exec: false));
        Assert.NotEqual(shared, p.Walk(va + Page).Pfn);
        Assert.Equal(shared, child.Walk(va + Page).Pfn);
        Assert.Equal([va + Page], seen);
    }

    // Random mmap/munmap/mprotect/fork/touch/mlock/exit on two process slots against a flat model
    // (VMAs, and per page: which abstract page, writable or not). After every step a walk of the
    // real tables must agree page by page (present/writable/user, the frame, sharing exactly where
    // the model shares, zero page where it says so), every changed or dropped leaf must have been
    // covered by an InvalidateRange while its page was still allocated, and at the end every frame
    // and table is back in the pool.
    [Fact]
    public void Tables_follow_a_flat_model_over_random_sequences()
    {
        Gen.Select(Gen.Int[0, 7], Gen.Int[0, 1], Gen.Int[0, 7], Gen.Int[1, 4], Gen.Int[0, 3]).Array[1, 40].Sample(steps =>
        {
            using var platform = new Platform();
            HostPageAllocator pages = HostPageAllocator.ForPlatform(platform, 4 * Sizes.GiB, 64 * Sizes.MiB);
            var w = new World(pages);
            w.Procs[0] = w.Spawn();
            foreach ((int op, int slot, int a, int b, int c) in steps)
            {
                w.Step(op, slot, a, b, c);
                w.Check();
            }

            for (int s = 0; s < 2; s++)
            {
                w.Exit(s);
            }

            Assert.Equal(0, pages.AllocatedPages);
            Assert.Equal(0, pages.PageTablePages);
        });
    }

    private sealed class Recorder(Action<ProcessAddressSpace, ulong, ulong> onRange, Action onRelease) : MmuNotifier
    {
        public override void InvalidateRange(ProcessAddressSpace mm, ulong start, ulong end) => onRange(mm, start, end);

        public override void Release(ProcessAddressSpace mm) => onRelease();
    }

    private sealed class ModelProc
    {
        public required ProcessAddressSpace Real;
        public List<(ulong Start, ulong End, VmProt Prot, bool Shared)> Vmas = [];
        public Dictionary<ulong, (int Id, bool Writable)> Ptes = []; // page id 0 = the zero page
        public HashSet<ulong> Locked = []; // mlocked pages (not inherited by a fork)
        public List<(ulong Start, ulong End)> Ranges = [];
        public Dictionary<ulong, ulong> Before = [];
        public bool FreedEarly;
    }

    private sealed class World(HostPageAllocator pages)
    {
        private static readonly VmProt[] Prots = [VmProt.None, VmProt.Read, VmProt.ReadWrite, VmProt.ReadWrite];
        private readonly Dictionary<int, ulong> _idToPfn = [];
        private readonly Dictionary<int, byte> _content = [];
        private int _nextId = 1;

        public ModelProc?[] Procs { get; } = new ModelProc?[2];

        public ModelProc Spawn(ProcessAddressSpace? real = null)
        {
            var m = new ModelProc { Real = real ?? new ProcessAddressSpace(pages, "p") };
            m.Real.MmuNotifierRegister(new Recorder((mm, s, e) =>
            {
                m.Ranges.Add((s, e));
                for (ulong va = s; va < e; va += Page)
                {
                    if (m.Before.TryGetValue(va, out ulong pfn) && pfn != pages.ZeroPagePfn && pages.RefCount(pfn) == 0)
                    {
                        m.FreedEarly = true;
                    }
                }
            }, () => { }));
            return m;
        }

        public void Step(int op, int slot, int a, int b, int c)
        {
            ModelProc? m = Procs[slot];
            if (m is null)
            {
                if (op == 4 && Procs[1 - slot] is { } parent)
                {
                    Fork(parent, slot);
                }
                else
                {
                    Procs[slot] = Spawn();
                }

                return;
            }

            foreach (ModelProc? q in Procs)
            {
                if (q is not null)
                {
                    q.Ranges.Clear();
                    q.Before = q.Ptes.Keys.ToDictionary(k => k, k => q.Real.Walk(k).Pfn);
                }
            }

            var old = Procs.Select(q => q?.Ptes.ToDictionary(kv => kv.Key, kv => kv.Value)).ToArray();
            switch (op)
            {
                case 0: // mmap
                    VmProt prot = Prots[c];
                    bool shared = a % 3 == 0;
                    ulong start = m.Real.Mmap((ulong)b * Page, prot, VmaKind.Anonymous, shared);
                    m.Vmas.Add((start, start + ((ulong)b * Page), prot, shared));
                    break;
                case 1: // munmap part of an area
                    if (Pick(m, a, b, out ulong us, out ulong ue))
                    {
                        m.Real.Munmap(us, ue - us);
                        Munmap(m, us, ue);
                        m.Locked.RemoveWhere(va => va >= us && va < ue);
                    }

                    break;
                case 2: // mprotect part of an area
                    if (Pick(m, a, b, out ulong ps, out ulong pe))
                    {
                        Assert.Equal(Errno.None, m.Real.Mprotect(ps, pe - ps, Prots[c]));
                        Mprotect(m, ps, pe, Prots[c]);
                    }

                    break;
                case 3 or 6: // CPU touch
                    if (Pick(m, a, 1, out ulong ts, out _))
                    {
                        bool write = op == 6 || c == 3;
                        Touch(m, ts, write);
                    }

                    break;
                case 4:
                    if (Procs[1 - slot] is null)
                    {
                        Fork(m, 1 - slot);
                    }

                    break;
                case 5: // mlock
                    if (Pick(m, a, b, out ulong ls, out ulong le))
                    {
                        // One area: populated, or -ENOMEM for a PROT_NONE one (check_vma_flags refuses it without FOLL_FORCE).
                        var lv = Vma(m, ls)!.Value;
                        Assert.Equal(lv.Prot == VmProt.None ? Errno.ENOMEM : Errno.None, m.Real.Mlock(ls, le - ls));
                        for (ulong va = ls; va < le; va += Page)
                        {
                            m.Locked.Add(va);
                        }

                        for (ulong va = ls; va < le && lv.Prot != VmProt.None; va += Page)
                        {
                            Fault(m, va, (lv.Prot & VmProt.Write) != 0 && !lv.Shared);
                        }
                    }

                    break;
                default: // exit
                    Exit(slot);
                    return;
            }

            // Every dropped, write-protected or re-pointed leaf was covered by a notification, before its page was freed.
            for (int s = 0; s < 2; s++)
            {
                if (Procs[s] is not { } q || old[s] is null)
                {
                    continue;
                }

                Assert.False(q.FreedEarly, "InvalidateRange after a page was freed");
                foreach ((ulong va, (int id, bool wr)) in old[s]!)
                {
                    bool changed = !q.Ptes.TryGetValue(va, out var now) || now.Id != id || (wr && !now.Writable);
                    if (changed && !(q.Vmas.Any(v => v.Start <= va && va < v.End && v.Prot == VmProt.None) && q.Ptes.ContainsKey(va) && now.Id == id))
                    {
                        Assert.True(q.Ranges.Any(r => r.Start <= va && va < r.End), $"no InvalidateRange covered 0x{va:x} in slot {s} after op {op} on slot {slot} ({a},{b},{c}): was ({id},{wr}) now {(q.Ptes.TryGetValue(va, out var nn) ? nn.ToString() : "none")}");
                    }
                }
            }
        }

        public void Exit(int slot)
        {
            if (Procs[slot] is { } m)
            {
                m.Real.Exit();
                Procs[slot] = null;
                Assert.Equal(0UL, m.Real.Pgd);
            }
        }

        public void Check()
        {
            var pfnToId = new Dictionary<ulong, int>();
            foreach ((int id, ulong pfn) in _idToPfn)
            {
                pfnToId[pfn] = id;
            }

            var live = new HashSet<int>();
            foreach (ModelProc? m in Procs)
            {
                if (m is null)
                {
                    continue;
                }

                foreach ((ulong s, ulong e, _, _) in m.Vmas)
                {
                    // One page past each area too: the guard gap or a hole munmap left has no leaf.
                    for (ulong va = s; va < e + Page; va += Page)
                    {
                        X86PageWalk walk = m.Real.Walk(va);
                        if (!m.Ptes.TryGetValue(va, out var pte))
                        {
                            Assert.Equal(0UL, walk.Pte);
                            continue;
                        }

                        bool present = Vma(m, va)!.Value.Prot != VmProt.None;
                        Assert.Equal(present, walk.Present);
                        Assert.Equal(present, walk.User);
                        Assert.Equal(present && pte.Writable, walk.Writable);
                        if (pte.Id == 0)
                        {
                            Assert.Equal(pages.ZeroPagePfn, walk.Pfn);
                            continue;
                        }

                        live.Add(pte.Id);
                        if (_idToPfn.TryGetValue(pte.Id, out ulong known))
                        {
                            Assert.Equal(known, walk.Pfn);
                        }
                        else
                        {
                            Assert.False(pfnToId.ContainsKey(walk.Pfn), $"page {pte.Id} landed on frame 0x{walk.Pfn:x} of page {(pfnToId.TryGetValue(walk.Pfn, out int o) ? o : -1)}");
                            _idToPfn[pte.Id] = walk.Pfn;
                            pfnToId[walk.Pfn] = pte.Id;
                        }

                        Assert.Equal(_content.GetValueOrDefault(pte.Id), pages.Memory.ReadUInt64(walk.Pfn << 12) is var q ? (byte)q : (byte)0);
                    }
                }
            }

            // Frames of pages no process maps any more are forgotten (the pool may reuse them).
            foreach (int id in _idToPfn.Keys.Where(k => !live.Contains(k)).ToList())
            {
                _idToPfn.Remove(id);
            }

            Assert.Equal(live.Count, pages.AllocatedPages);
        }

        private static (ulong Start, ulong End, VmProt Prot, bool Shared)? Vma(ModelProc m, ulong va)
        {
            foreach (var v in m.Vmas)
            {
                if (v.Start <= va && va < v.End)
                {
                    return v;
                }
            }

            return null;
        }

        private static bool Pick(ModelProc m, int a, int b, out ulong start, out ulong end)
        {
            start = end = 0;
            if (m.Vmas.Count == 0)
            {
                return false;
            }

            var v = m.Vmas[a % m.Vmas.Count];
            ulong pages = (v.End - v.Start) / Page;
            start = v.Start + ((ulong)a % pages * Page);
            end = Math.Min(v.End, start + ((ulong)b * Page));
            return true;
        }

        private void Fork(ModelProc parent, int slot)
        {
            ModelProc child = Spawn(parent.Real.Fork("child"));
            child.Vmas = [.. parent.Vmas];
            foreach ((ulong va, (int id, bool wr)) in parent.Ptes.ToList())
            {
                bool shared = Vma(parent, va)!.Value.Shared;
                if (!shared && id != 0)
                {
                    parent.Ptes[va] = (id, false);
                }

                child.Ptes[va] = shared ? (id, wr) : (id, false);
            }

            Procs[slot] = child;
        }

        private static void Munmap(ModelProc m, ulong s, ulong e)
        {
            var next = new List<(ulong Start, ulong End, VmProt Prot, bool Shared)>();
            foreach (var v in m.Vmas)
            {
                if (v.End <= s || v.Start >= e)
                {
                    next.Add(v);
                    continue;
                }

                if (v.Start < s)
                {
                    next.Add(v with { End = s });
                }

                if (v.End > e)
                {
                    next.Add(v with { Start = e });
                }
            }

            m.Vmas = next;
            foreach (ulong va in m.Ptes.Keys.Where(k => k >= s && k < e).ToList())
            {
                m.Ptes.Remove(va);
            }
        }

        private void Mprotect(ModelProc m, ulong s, ulong e, VmProt prot)
        {
            var next = new List<(ulong Start, ulong End, VmProt Prot, bool Shared)>();
            var populate = new List<(ulong Start, ulong End)>();
            foreach (var v in m.Vmas)
            {
                if (v.End <= s || v.Start >= e)
                {
                    next.Add(v);
                    continue;
                }

                ulong cs = Math.Max(v.Start, s), ce = Math.Min(v.End, e);
                if (v.Start < cs)
                {
                    next.Add(v with { End = cs });
                }

                next.Add(v with { Start = cs, End = ce, Prot = prot });
                if (!v.Shared && (v.Prot & VmProt.Write) == 0 && (prot & VmProt.Write) != 0)
                {
                    populate.Add((cs, ce));
                }
                if (v.End > ce)
                {
                    next.Add(v with { Start = ce });
                }

                // pte_modify: R/W from the new protection, which only shared areas carry.
                for (ulong va = cs; va < ce; va += Page)
                {
                    if (m.Ptes.TryGetValue(va, out var pte))
                    {
                        m.Ptes[va] = (pte.Id, v.Shared && (prot & VmProt.Write) != 0);
                    }
                }
            }

            m.Vmas = next;

            // mprotect_fixup: a locked private area made writable is populated for writing (copy-on-write broken).
            foreach ((ulong ps, ulong pe) in populate)
            {
                for (ulong va = ps; va < pe; va += Page)
                {
                    if (m.Locked.Contains(va))
                    {
                        Fault(m, va, true);
                    }
                }
            }
        }

        private void Touch(ModelProc m, ulong va, bool write)
        {
            var v = Vma(m, va)!.Value;
            bool allowed = v.Prot != VmProt.None && (!write || (v.Prot & VmProt.Write) != 0);
            byte value = (byte)(_nextId * 7);
            Errno e = write ? m.Real.Write(va, [value]) : m.Real.Read(va, new byte[1]);
            Assert.Equal(allowed ? Errno.None : Errno.EFAULT, e);
            if (!allowed)
            {
                return;
            }

            int id = Fault(m, va, write);
            if (write)
            {
                _content[id] = value;
            }
        }

        // The model's handle_mm_fault; returns the page id mapped afterwards.
        private int Fault(ModelProc m, ulong va, bool write)
        {
            var v = Vma(m, va)!.Value;
            bool shared = v.Shared;
            bool w = (v.Prot & VmProt.Write) != 0;
            if (!m.Ptes.TryGetValue(va, out var pte))
            {
                if (!write && !shared)
                {
                    m.Ptes[va] = (0, false);
                    return 0;
                }

                int fresh = _nextId++;
                m.Ptes[va] = (fresh, shared ? w : write);
                return fresh;
            }

            if (!write || pte.Writable)
            {
                return pte.Id;
            }

            int mappers = Procs.Where(q => q is not null).Sum(q => q!.Ptes.Values.Count(x => x.Id == pte.Id));
            if (shared || (pte.Id != 0 && mappers == 1))
            {
                m.Ptes[va] = (pte.Id, true);
                return pte.Id;
            }

            int copy = _nextId++;
            _content[copy] = _content.GetValueOrDefault(pte.Id);
            m.Ptes[va] = (copy, true);
            return copy;
        }
    }
}
