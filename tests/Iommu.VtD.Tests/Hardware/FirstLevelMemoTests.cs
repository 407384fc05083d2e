using System.Collections.Concurrent;
using System.Globalization;
using CsCheck;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;
using static Iommu.VtD.Tests.Hardware.Infrastructure.FirstStageRig;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// First-level requests served from the memo of the caches' answers (TranslationShortcut) answer what
/// the caches would: a hit follows its IOTLB entry (stale until invalidated, a write through a clean leaf
/// walks to set D), and no request that starts after an invalidation completed returns a page it
/// removed: P_IOTLB (G=10, G=11), IOTLB domain- and page-selective (every first-stage entry of the DID),
/// PASID-cache invalidation of a changed PASID entry.
/// </summary>
public sealed class FirstLevelMemoTests
{
    private const ushort Did = 5;
    private const int Pages = 4;
    private const int MaxVersions = 256;
    private const ulong Base = 0x10_0000_0000;
    private const ulong DataBase = 0x2000_0000;
    private static readonly uint[] Pasids = [7, 8];

    private enum Op
    {
        Translate,
        Read,
        Write,
        Remap,
        PiotlbPasid,
        PiotlbPage,
        IotlbDomain,
        IotlbPage,
        TogglePasidEntry,
    }

    // One thread, random requests and changes over two PASIDs sharing one DID and one set of tables,
    // against a model of the IOTLB (large enough never to evict here): a request returns the page its
    // entry was filled with until an invalidation removes the entry; a write through an entry whose
    // leaf was clean walks (sets D) and fills the current page; a PASID entry cleared and
    // PASID-cache-invalidated faults, and once restored the IOTLB entries it left serve again.
    [Fact]
    public void A_first_level_translation_follows_its_iotlb_entry_until_an_invalidation_removes_it()
    {
        // Requests often, changes less, invalidations least (each drops entries the model then refills).
        Gen<Op> op = Gen.Frequency(
            (4, Gen.Const(Op.Translate)), (4, Gen.Const(Op.Read)), (4, Gen.Const(Op.Write)), (3, Gen.Const(Op.Remap)),
            (1, Gen.Const(Op.PiotlbPasid)), (1, Gen.Const(Op.PiotlbPage)), (1, Gen.Const(Op.IotlbDomain)),
            (1, Gen.Const(Op.IotlbPage)), (1, Gen.Const(Op.TogglePasidEntry)));
        Gen.Select(op, Gen.Int[0, 1], Gen.Int[0, Pages - 1]).Array[1, 120]
            .Sample(RunModel, iter: 150, print: ops => string.Join(", ", ops.Select(o => $"{o.Item1}({Pasids[o.Item2]},{o.Item3})")));
    }

    private static void RunModel((Op Op, int Pasid, int Page)[] ops)
    {
        using FirstStageRig r = Rig();
        int[] version = new int[Pages];
        bool[] leafDirty = new bool[Pages];
        bool[] present = [true, true];
        var cached = new Dictionary<(int, int), (int Version, bool Dirty)>();
        for (int i = 0; i < ops.Length; i++)
        {
            (Op op, int p, int page) = ops[i];
            uint pasid = Pasids[p];
            switch (op)
            {
                case Op.Remap:
                    version[page] = (version[page] + 1) % MaxVersions;
                    r.Set(r.EntryAt(Iova(page), 1), Output(page, version[page]) | P | RW | US);
                    leafDirty[page] = false;
                    continue;
                case Op.PiotlbPasid:
                    r.B.Submit(6 | (2UL << 4) | ((ulong)Did << 16) | ((ulong)pasid << 32));
                    RemoveWhere(cached, k => k.Item1 == p);
                    continue;
                case Op.PiotlbPage:
                    r.B.Submit(6 | (3UL << 4) | ((ulong)Did << 16) | ((ulong)pasid << 32), Iova(page));
                    cached.Remove((p, page));
                    continue;
                case Op.IotlbDomain:
                    r.B.Submit(2 | (2UL << 4) | ((ulong)Did << 16));
                    cached.Clear();
                    continue;
                case Op.IotlbPage:
                    // A second-stage address: every first-stage entry of the DID goes.
                    r.B.Submit(2 | (3UL << 4) | ((ulong)Did << 16), Iova(page));
                    cached.Clear();
                    continue;
                case Op.TogglePasidEntry:
                    present[p] = !present[p];
                    if (present[p])
                    {
                        r.Entry(pasid, Did);
                    }
                    else
                    {
                        r.B.PasidEntry(r.Dir, pasid, 0, 0);
                    }

                    r.B.Submit(7 | (1UL << 4) | ((ulong)Did << 16) | ((ulong)pasid << 32));
                    continue;
            }

            bool write = op == Op.Write;
            string? wrong;
            if (!present[p])
            {
                wrong = Request(r, pasid, page, op, out ulong pa) ? $"0x{pa:X} from a cleared PASID entry" : null;
            }
            else
            {
                if (!cached.TryGetValue((p, page), out var entry) || (write && !entry.Dirty))
                {
                    entry = (version[page], leafDirty[page] || write);
                    leafDirty[page] |= write;
                    cached[(p, page)] = entry;
                }

                ulong expected = Output(page, entry.Version);
                wrong = Request(r, pasid, page, op, out ulong pa) && pa == expected ? null : $"expected 0x{expected:X}, got 0x{pa:X}";
            }

            if (wrong != null)
            {
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"Step {i} ({op} PASID {pasid} page {page}): {wrong}."));
            }
        }
    }

    // Writer and two reader threads: the writer remaps a page, invalidates it in the way the sample
    // says, waits for the wait descriptor's status write, then publishes the generation; readers (DMA
    // reads and Translate, both PASIDs) check that a request started after the publication never
    // returns a version the invalidation removed. Warm-up puts every page in the IOTLB and the memo
    // first, so an invalidation that did not retire the memo shows.
    [Fact]
    public void A_first_level_request_started_after_an_invalidation_completed_never_returns_the_page_it_removed()
    {
        Gen.Int[0, 4].Array[8, 48].Sample(kinds =>
        {
            using FirstStageRig r = Rig();
            ulong status = r.B.AllocFrame();
            int published = 0;
            bool done = false;
            int[] seen = new int[2];
            var wrong = new ConcurrentQueue<string>();
            var errors = new ConcurrentQueue<Exception>();
            for (int page = 0; page < Pages; page++)
            {
                foreach (uint pasid in Pasids)
                {
                    Assert.True(Request(r, pasid, page, Op.Read, out ulong pa) && pa == Output(page, 0));
                }
            }

            Thread[] readers = [.. Enumerable.Range(0, 2).Select(t => new Thread(() =>
            {
                try
                {
                    var rng = new Random(t);
                    while (!Volatile.Read(ref done))
                    {
                        int g = Volatile.Read(ref published);
                        int page = rng.Next(Pages);
                        uint pasid = Pasids[rng.Next(2)];
                        int min = VersionAt(g, page);
                        bool ok = Request(r, pasid, page, rng.Next(2) == 0 ? Op.Read : Op.Translate, out ulong pa);
                        ulong v = (pa - DataBase - ((ulong)page * MaxVersions << 12)) >> 12;
                        if (!ok || v < (ulong)min || v > (ulong)VersionAt(kinds.Length, page))
                        {
                            wrong.Enqueue($"generation {g}, PASID {pasid}, page {page}: 0x{pa:X} (version {min} or later allowed)");
                            Volatile.Write(ref done, true);
                        }

                        Volatile.Write(ref seen[t], g);
                    }
                }
                catch (Exception e)
                {
                    errors.Enqueue(e);
                    Volatile.Write(ref done, true);
                }
            }) { IsBackground = true })];
            foreach (Thread t in readers)
            {
                t.Start();
            }

            try
            {
                for (int n = 1; n <= kinds.Length && !Volatile.Read(ref done); n++)
                {
                    int page = n % Pages;
                    r.Set(r.EntryAt(Iova(page), 1), Output(page, VersionAt(n, page)) | P | RW | US);
                    uint pasid = Pasids[n % 2];
                    switch (kinds[n - 1])
                    {
                        case 0: // P_IOTLB G=10 of each PASID
                            foreach (uint q in Pasids)
                            {
                                r.B.Submit(6 | (2UL << 4) | ((ulong)Did << 16) | ((ulong)q << 32));
                            }

                            break;
                        case 1: // P_IOTLB G=11, the page, each PASID
                            foreach (uint q in Pasids)
                            {
                                r.B.Submit(6 | (3UL << 4) | ((ulong)Did << 16) | ((ulong)q << 32), Iova(page));
                            }

                            break;
                        case 2: // IOTLB domain-selective
                            r.B.Submit(2 | (2UL << 4) | ((ulong)Did << 16));
                            break;
                        case 3: // IOTLB page-selective: drops the DID's first-stage entries
                            r.B.Submit(2 | (3UL << 4) | ((ulong)Did << 16), Iova(page));
                            break;
                        default: // PASID entry rewritten, PASID-cache then P_IOTLB of every PASID (the driver's order)
                            r.Entry(pasid, Did);
                            r.B.Submit(7 | (1UL << 4) | ((ulong)Did << 16) | ((ulong)pasid << 32));
                            foreach (uint q in Pasids)
                            {
                                r.B.Submit(6 | (2UL << 4) | ((ulong)Did << 16) | ((ulong)q << 32));
                            }

                            break;
                    }

                    r.B.Submit(5 | (1UL << 5) | ((ulong)(uint)n << 32), status);
                    Assert.Equal((uint)n, r.B.Memory.ReadUInt32(status));
                    Volatile.Write(ref published, n);
                    Assert.True(SpinWait.SpinUntil(() => Volatile.Read(ref seen[0]) >= n || Volatile.Read(ref seen[1]) >= n || Volatile.Read(ref done), TimeSpan.FromSeconds(10)));
                }
            }
            finally
            {
                Volatile.Write(ref done, true);
                foreach (Thread t in readers)
                {
                    Assert.True(t.Join(TimeSpan.FromSeconds(30)));
                }
            }

            Assert.Empty(errors);
            Assert.Empty(wrong);
            Assert.Equal(0u, r.B.Fsts & 0x10u);
        }, iter: 12, threads: 1);
    }

    // A first-level write through a clean leaf sets D once; later writes and reads of the page come from
    // the memo (IOTLB hits, no walk) and report the page writable, reads of a clean leaf included.
    [Fact]
    public void Memo_hits_count_as_iotlb_hits_and_report_writable_as_the_walk_did()
    {
        using FirstStageRig r = Rig();
        ulong leaf = r.EntryAt(Iova(0), 1);
        VtdTranslation t = r.Translate(7, Iova(0));
        Assert.True(t.Writable);
        Assert.Equal(0UL, r.Read(leaf) & D);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(r.Translate(7, Iova(0)).Writable);
        }

        long misses = r.Unit.Statistics.IotlbMisses;
        Assert.True(Request(r, 7, 0, Op.Write, out ulong pa));
        Assert.Equal(Output(0, 0), pa);
        Assert.NotEqual(0UL, r.Read(leaf) & D);
        r.Set(leaf, r.Read(leaf) & ~D); // only a walk would set it again
        long hits = r.Unit.Statistics.IotlbHits;
        for (int i = 0; i < 4; i++)
        {
            Assert.True(Request(r, 7, 0, i % 2 == 0 ? Op.Write : Op.Read, out pa));
            Assert.Equal(Output(0, 0), pa);
        }

        Assert.Equal(0UL, r.Read(leaf) & D);
        Assert.Equal(hits + 4, r.Unit.Statistics.IotlbHits);
        Assert.Equal(misses, r.Unit.Statistics.IotlbMisses);
    }

    private static FirstStageRig Rig()
    {
        var r = new FirstStageRig(VtdConfig.ScalableModeFirstLevel48Bit);
        foreach (uint pasid in Pasids)
        {
            r.Entry(pasid, Did);
        }

        r.Enable();
        r.B.EnableQueue(wide: true);
        for (int page = 0; page < Pages; page++)
        {
            r.Map(Iova(page), Output(page, 0));
        }

        return r;
    }

    // A request of the op's kind; true with the output address when it translated (and moved 8 bytes).
    private static bool Request(FirstStageRig r, uint pasid, int page, Op op, out ulong pa)
    {
        if (op == Op.Translate)
        {
            VtdTranslation t = r.Translate(pasid, Iova(page) + 0x10);
            pa = t.PhysicalAddress - 0x10;
            return t.Status == VtdTranslationStatus.Translated;
        }

        Span<byte> buffer = stackalloc byte[8];
        DmaResult d = r.Unit.Transfer(Rid, pasid, Iova(page) + 0x10, buffer, op == Op.Write ? DmaAccess.Write : DmaAccess.Read);
        pa = d.Address - 0x10;
        return d.IsOk && d.Transferred == 8;
    }

    private static void RemoveWhere(Dictionary<(int, int), (int, bool)> map, Func<(int, int), bool> match)
    {
        foreach ((int, int) k in map.Keys.Where(match).ToArray())
        {
            map.Remove(k);
        }
    }

    // Generation n (n ≥ 1) remaps page n mod Pages.
    private static int VersionAt(int g, int page) => (g / Pages) + (page != 0 && g % Pages >= page ? 1 : 0);

    private static ulong Iova(int page) => Base + ((ulong)page << 12);

    private static ulong Output(int page, int version) => DataBase + ((((ulong)page * MaxVersions) + (ulong)version) << 12);
}
