using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

public class CacheInvalidationTests
{
    private const ushort Rid = 0x0608;
    private const ushort Did = 0x2A;

    public enum Flush
    {
        RegisterPage,
        RegisterDomain,
        RegisterGlobal,
        QueuedPage,
        QueuedDomain,
        QueuedGlobal,
    }

    public static TheoryData<Flush> Flushes => [.. Enum.GetValues<Flush>()];

    private static (VtdBench Bench, ulong Sl) LegacyWithMapping(VtdConfig? config = null)
    {
        var b = new VtdBench(config ?? VtdConfig.Legacy48Bit);
        ulong sl = b.SetupLegacyDevice(Rid, 2, Did);
        b.Map(sl, 4, 0x4000, 0x00D0_0000);
        b.Enable(scalable: false);
        return (b, sl);
    }

    private static void DoFlush(VtdBench b, Flush f, ushort did, ulong address)
    {
        switch (f)
        {
            case Flush.RegisterPage:
                b.Unit.Write64(b.IotlbRegBase, address);
                b.Unit.Write64(b.IotlbRegBase + 8, (1UL << 63) | (3UL << 60) | ((ulong)did << 32));
                break;
            case Flush.RegisterDomain:
                b.Unit.Write64(b.IotlbRegBase + 8, (1UL << 63) | (2UL << 60) | ((ulong)did << 32));
                break;
            case Flush.RegisterGlobal:
                b.GlobalIotlbInvalidate();
                break;
            case Flush.QueuedPage:
                b.EnableQueue(wide: false);
                b.Submit(2 | (3UL << 4) | ((ulong)did << 16), address);
                break;
            case Flush.QueuedDomain:
                b.EnableQueue(wide: false);
                b.Submit(2 | (2UL << 4) | ((ulong)did << 16));
                break;
            case Flush.QueuedGlobal:
                b.EnableQueue(wide: false);
                b.Submit(2 | (1UL << 4));
                break;
        }
    }

    [Theory]
    [MemberData(nameof(Flushes))]
    public void Stale_iotlb_entry_is_used_until_invalidated(Flush flush)
    {
        (VtdBench b, ulong sl) = LegacyWithMapping();
        using VtdBench _ = b;
        Assert.Equal(0x00D0_0000UL, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).PhysicalAddress);

        b.Map(sl, 4, 0x4000, 0x00E0_0000); // driver changes the PTE …
        Assert.Equal(0x00D0_0000UL, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).PhysicalAddress); // … and forgets to flush

        DoFlush(b, flush, Did, 0x4000);
        Assert.Equal(0x00E0_0000UL, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).PhysicalAddress);
        Assert.Equal(0u, b.Fsts);
    }

    [Theory]
    [InlineData(Flush.RegisterPage)]
    [InlineData(Flush.RegisterDomain)]
    [InlineData(Flush.QueuedPage)]
    [InlineData(Flush.QueuedDomain)]
    public void Invalidation_of_another_domain_keeps_the_entry(Flush flush)
    {
        (VtdBench b, ulong sl) = LegacyWithMapping();
        using VtdBench _ = b;
        b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read);
        b.Map(sl, 4, 0x4000, 0x00E0_0000);
        DoFlush(b, flush, Did + 1, 0x4000);
        Assert.Equal(0x00D0_0000UL, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).PhysicalAddress);
    }

    [Fact]
    public void Page_selective_invalidation_covers_exactly_the_address_mask_range()
    {
        (VtdBench b, ulong sl) = LegacyWithMapping();
        using VtdBench _ = b;
        for (ulong p = 0; p < 8; p++)
        {
            b.Map(sl, 4, 0x10_0000 + (p << 12), 0x0100_0000 + (p << 12));
            b.Unit.Translate(Rid, null, 0x10_0000 + (p << 12), 4, DmaAccess.Read);
            b.Map(sl, 4, 0x10_0000 + (p << 12), 0x0200_0000 + (p << 12));
        }

        b.Unit.Write64(b.IotlbRegBase, 0x10_2000 | 1); // AM=1: pages 2 and 3
        b.Unit.Write64(b.IotlbRegBase + 8, (1UL << 63) | (3UL << 60) | ((ulong)Did << 32));
        for (ulong p = 0; p < 8; p++)
        {
            ulong expected = (p is 2 or 3 ? 0x0200_0000UL : 0x0100_0000UL) + (p << 12);
            Assert.Equal(expected, b.Unit.Translate(Rid, null, 0x10_0000 + (p << 12), 4, DmaAccess.Read).PhysicalAddress);
        }
    }

    [Fact]
    public void Page_selective_invalidation_drops_a_superpage_containing_the_address()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong sl = b.SetupLegacyDevice(Rid, 2, Did);
        b.Map(sl, 4, 0x20_0000, 0x0040_0000, leafLevel: 2);
        b.Enable(scalable: false);
        b.Unit.Translate(Rid, null, 0x20_0000, 4, DmaAccess.Read);
        b.Map(sl, 4, 0x20_0000, 0x0060_0000, leafLevel: 2);
        b.Unit.Write64(b.IotlbRegBase, 0x2F_F000);
        b.Unit.Write64(b.IotlbRegBase + 8, (1UL << 63) | (3UL << 60) | ((ulong)Did << 32));
        Assert.Equal(0x0060_0010UL, b.Unit.Translate(Rid, null, 0x20_0010, 4, DmaAccess.Read).PhysicalAddress);
    }

    [Fact]
    public void Unmapped_page_keeps_translating_until_flushed()
    {
        (VtdBench b, ulong sl) = LegacyWithMapping();
        using VtdBench _ = b;
        b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read);
        b.Memory.WriteUInt64(b.EntryAddress(sl, 4, 0x4000, 1), 0);
        Assert.Equal(VtdTranslationStatus.Translated, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).Status);
        DoFlush(b, Flush.RegisterPage, Did, 0x4000);
        Assert.Equal(VtdFaultReason.Read, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).Reason);
    }

    [Fact]
    public void Cached_read_only_entry_faults_a_write_until_flushed()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        ulong sl = b.SetupLegacyDevice(Rid, 2, Did);
        b.Map(sl, 4, 0x4000, 0x00D0_0000, write: false);
        b.Enable(scalable: false);
        b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read);
        b.Map(sl, 4, 0x4000, 0x00D0_0000, write: true);
        Assert.Equal(VtdFaultReason.Write, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Write).Reason);
        DoFlush(b, Flush.RegisterPage, Did, 0x4000);
        Assert.True(b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Write).Writable);
    }

    public enum ContextFlush
    {
        RegisterGlobal,
        RegisterDomain,
        RegisterDevice,
        QueuedGlobal,
        QueuedDomain,
        QueuedDevice,
    }

    [Theory]
    [InlineData(ContextFlush.RegisterGlobal)]
    [InlineData(ContextFlush.RegisterDomain)]
    [InlineData(ContextFlush.RegisterDevice)]
    [InlineData(ContextFlush.QueuedGlobal)]
    [InlineData(ContextFlush.QueuedDomain)]
    [InlineData(ContextFlush.QueuedDevice)]
    public void Stale_context_entry_is_used_until_context_cache_invalidation(ContextFlush flush)
    {
        (VtdBench b, ulong _) = LegacyWithMapping();
        using VtdBench __ = b;
        b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read);

        // Move the device to pass-through in memory only.
        ulong ctx = b.ContextTableFor(Rid >> 8, false);
        b.LegacyContext(ctx, Rid & 0xFF, VtdBench.LegacyContextLow(0, tt: 2), VtdBench.LegacyContextHigh(2, Did));
        b.GlobalIotlbInvalidate();
        Assert.Equal(0x00D0_0000UL, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).PhysicalAddress);

        ulong g = flush switch
        {
            ContextFlush.RegisterGlobal or ContextFlush.QueuedGlobal => 1,
            ContextFlush.RegisterDomain or ContextFlush.QueuedDomain => 2,
            _ => 3,
        };
        if (flush < ContextFlush.QueuedGlobal)
        {
            b.Unit.Write64(0x28, (1UL << 63) | (g << 61) | ((ulong)Rid << 16) | Did);
        }
        else
        {
            b.EnableQueue(wide: false);
            b.Submit(1 | (g << 4) | ((ulong)Did << 16) | ((ulong)Rid << 32));
            Assert.Equal(0u, b.Fsts);
        }

        Assert.Equal(0x4000UL, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).PhysicalAddress);
    }

    [Fact]
    public void Device_selective_context_invalidation_with_another_did_keeps_the_entry()
    {
        (VtdBench b, ulong _) = LegacyWithMapping();
        using VtdBench __ = b;
        b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read);
        b.LegacyContext(b.ContextTableFor(Rid >> 8, false), Rid & 0xFF, 0, 0);
        b.Unit.Write64(0x28, (1UL << 63) | (3UL << 61) | ((ulong)Rid << 16) | (Did + 1));
        Assert.Equal(VtdTranslationStatus.Translated, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).Status);
        b.Unit.Write64(0x28, (1UL << 63) | (3UL << 61) | ((ulong)Rid << 16) | Did);
        Assert.Equal(VtdFaultReason.ContextEntryNotPresent, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).Reason);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Caching_mode_caches_not_present_context_entries_under_did_0(bool cachingMode)
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit with { CachingMode = cachingMode });
        b.ContextTableFor(Rid >> 8, false);
        b.Enable(scalable: false);
        Assert.Equal(VtdFaultReason.ContextEntryNotPresent, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).Reason);

        ulong sl = b.SetupLegacyDevice(Rid, 2, Did);
        b.Map(sl, 4, 0x4000, 0x00D0_0000);
        VtdTranslation before = b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read);
        Assert.Equal(cachingMode, before.IsFault);

        // What Linux does under CM: device-selective with DID 0, then DSI of the new domain.
        b.Unit.Write64(0x28, (1UL << 63) | (3UL << 61) | ((ulong)Rid << 16));
        Assert.Equal(0x00D0_0000UL, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read).PhysicalAddress);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Caching_mode_caches_not_present_ptes_so_map_needs_a_flush(bool cachingMode)
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit with { CachingMode = cachingMode });
        ulong sl = b.SetupLegacyDevice(Rid, 2, Did);
        b.Map(sl, 4, 0x1000, 0x00D0_0000); // builds the tables
        b.Enable(scalable: false);
        Assert.Equal(VtdFaultReason.Write, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Write).Reason);
        b.Map(sl, 4, 0x4000, 0x00D4_0000);
        Assert.Equal(cachingMode, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Write).IsFault);
        DoFlush(b, Flush.RegisterPage, Did, 0x4000);
        Assert.Equal(0x00D4_0000UL, b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Write).PhysicalAddress);
    }

    [Fact]
    public void Statistics_count_hits_and_misses()
    {
        (VtdBench b, ulong _) = LegacyWithMapping();
        using VtdBench __ = b;
        b.Unit.Translate(Rid, null, 0x4000, 4, DmaAccess.Read);
        b.Unit.Translate(Rid, null, 0x4008, 4, DmaAccess.Read);
        b.Unit.Translate(Rid, null, 0x4010, 4, DmaAccess.Read);
        VtdCacheStatistics s = b.Unit.Statistics;
        Assert.Equal(1, s.ContextMisses);
        Assert.Equal(2, s.ContextHits);
        Assert.Equal(1, s.IotlbMisses);
        Assert.Equal(2, s.IotlbHits);
        Assert.Equal(1, s.IotlbEntries);
        b.GlobalIotlbInvalidate();
        Assert.Equal(0, b.Unit.Statistics.IotlbEntries);
    }

    [Fact]
    public void Wait_descriptor_writes_status_and_raises_completion_interrupt()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        var events = new List<VtdInterruptEventArgs>();
        b.Unit.InvalidationCompletionEvent += (_, e) => events.Add(e);
        b.Unit.Write32(0xA4, 0x55);
        b.Unit.Write32(0xA8, 0xFEE0_2000);
        b.Unit.Write32(0xA0, 0);
        b.EnableQueue(wide: false);
        ulong status = b.AllocFrame() + 0x40;
        b.Submit(5 | (1UL << 5) | (0xC0FFEEUL << 32), status); // SW
        Assert.Equal(0xC0FFEEu, b.Memory.ReadUInt32(status));
        Assert.Empty(events);
        Assert.Equal(0u, b.Unit.Read32(0x9C));

        b.Submit(5 | (1UL << 4)); // IF
        Assert.Equal(1u, b.Unit.Read32(0x9C));
        Assert.Single(events);
        Assert.Equal(0xFEE0_2000UL, events[0].Address);
        Assert.Equal(0x55u, events[0].Data);
        Assert.Equal(b.QueueTailIndex, b.QueueHead);
        b.Unit.Write32(0x9C, 1);
        Assert.Equal(0u, b.Unit.Read32(0x9C));
    }

    [Theory]
    [InlineData(0UL, 0UL, 3)]                          // type 0
    [InlineData(9UL, 0UL, 3)]                          // page-group response: no PRS
    [InlineData(1UL, 0UL, 4)]                          // context-cache with G = 0
    [InlineData(2UL | (1UL << 4) | (1UL << 8), 0UL, 4)] // IOTLB reserved bit 8
    [InlineData(2UL | (3UL << 4), 19UL, 4)]            // PSI with AM > MAMV
    [InlineData(5UL | (1UL << 5), 2UL, 4)]             // wait: STADDR bits 1:0
    [InlineData(7UL | (3UL << 4), 0UL, 5)]             // PASID-cache in a 128-bit queue
    public void Invalid_descriptor_sets_iqe_and_stops_the_queue(ulong q0, ulong q1, int iqei)
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        int events = 0;
        b.Unit.FaultEvent += (_, _) => events++;
        b.Unit.Write32(0x38, 0);
        b.EnableQueue(wide: false);
        ulong status = b.AllocFrame();
        b.Submit(5 | (1UL << 5) | (1UL << 32), status);
        b.Submit(q0, q1);
        b.Submit(5 | (1UL << 5) | (2UL << 32), status);

        Assert.Equal(1u << 4, b.Fsts & (1u << 4));
        Assert.Equal((ulong)iqei, b.Unit.Read64(0xB0) & 0xF);
        Assert.Equal(1UL, b.QueueHead); // points at the bad descriptor
        Assert.Equal(1u, b.Memory.ReadUInt32(status));
        Assert.Equal(1, events);

        // Software fixes the descriptor, clears IQE and writes the tail again.
        ulong q = b.Unit.Read64(0x90) & ~0xFFFUL;
        b.Memory.WriteUInt64(q + 16, 4); // IEC descriptor, a no-op
        b.Memory.WriteUInt64(q + 24, 0);
        b.Unit.Write32(0x34, 1u << 4);
        b.Unit.Write64(0x88, b.Unit.Read64(0x88));
        Assert.Equal(2u, b.Memory.ReadUInt32(status));
        Assert.Equal(3UL, b.QueueHead);
    }

    [Fact]
    public void Register_invalidation_is_ignored_while_queued_invalidation_is_enabled()
    {
        using var b = new VtdBench(VtdConfig.Legacy48Bit);
        b.EnableQueue(wide: false);
        b.Unit.Write64(0x28, (1UL << 63) | (1UL << 61));
        Assert.Equal(1UL << 63, b.Unit.Read64(0x28) & (1UL << 63));
    }

    [Fact]
    public void Pasid_cache_keeps_a_stale_pasid_entry_until_pasid_cache_invalidation()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        const ushort did = 4;
        (ulong dir, ulong sl) = b.SetupScalableDevice(Rid, pasid: 3, 2, did);
        b.Map(sl, 4, 0x1000, 0x00E1_0000);
        ulong sl2 = b.AllocFrame();
        b.Map(sl2, 4, 0x1000, 0x00E2_0000);
        b.Enable(scalable: true);
        b.EnableQueue(wide: true);
        Assert.Equal(0x00E1_0000UL, b.Unit.Translate(Rid, 3, 0x1000, 4, DmaAccess.Read).PhysicalAddress);

        b.PasidEntry(dir, 3, VtdBench.PasidEntryLow(sl2, 2, 2), did);
        b.Submit(2 | (2UL << 4) | ((ulong)did << 16)); // IOTLB DSI alone is not enough
        Assert.Equal(0x00E1_0000UL, b.Unit.Translate(Rid, 3, 0x1000, 4, DmaAccess.Read).PhysicalAddress);

        b.Submit(7 | (1UL << 4) | ((ulong)did << 16) | (3UL << 32)); // PASID-selective
        b.Submit(6 | (2UL << 4) | ((ulong)did << 16) | (3UL << 32)); // PASID-based IOTLB, all in PASID
        Assert.Equal(0u, b.Fsts);
        Assert.Equal(0x00E2_0000UL, b.Unit.Translate(Rid, 3, 0x1000, 4, DmaAccess.Read).PhysicalAddress);
        Assert.Equal(2, b.Unit.Statistics.PasidMisses);
    }

    [Fact]
    public void Pasid_based_iotlb_all_in_pasid_drops_only_that_pasid()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit);
        const ushort did = 4;
        ulong dir = b.AllocFrame();
        b.ScalableContext(Rid, dir, 7);
        ulong sl = b.AllocFrame();
        b.PasidEntry(dir, 1, VtdBench.PasidEntryLow(sl, 2, 2), did);
        b.PasidEntry(dir, 2, VtdBench.PasidEntryLow(sl, 2, 2), did);
        b.Map(sl, 4, 0x1000, 0x00E1_0000);
        b.Enable(scalable: true);
        b.EnableQueue(wide: true);
        b.Unit.Translate(Rid, 1, 0x1000, 4, DmaAccess.Read);
        b.Unit.Translate(Rid, 2, 0x1000, 4, DmaAccess.Read);
        b.Map(sl, 4, 0x1000, 0x00E3_0000);
        b.Submit(6 | (2UL << 4) | ((ulong)did << 16) | (1UL << 32));
        Assert.Equal(0x00E3_0000UL, b.Unit.Translate(Rid, 1, 0x1000, 4, DmaAccess.Read).PhysicalAddress);
        Assert.Equal(0x00E1_0000UL, b.Unit.Translate(Rid, 2, 0x1000, 4, DmaAccess.Read).PhysicalAddress);
    }

    [Fact]
    public void Caching_mode_caches_not_present_pasid_entries_until_pasid_selective_flush()
    {
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit with { CachingMode = true });
        ulong dir = b.AllocFrame();
        b.ScalableContext(Rid, dir, 7);
        b.PasidTableFor(dir, 5);
        b.Enable(scalable: true);
        b.EnableQueue(wide: true);
        Assert.Equal(VtdFaultReason.PasidEntryNotPresent, b.Unit.Translate(Rid, 5, 0x1000, 4, DmaAccess.Read).Reason);
        ulong sl = b.AllocFrame();
        b.Map(sl, 4, 0x1000, 0x00E5_0000);
        b.PasidEntry(dir, 5, VtdBench.PasidEntryLow(sl, 2, 2), did: 8);
        Assert.Equal(VtdFaultReason.PasidEntryNotPresent, b.Unit.Translate(Rid, 5, 0x1000, 4, DmaAccess.Read).Reason);
        b.Submit(7 | (1UL << 4) | (8UL << 16) | (5UL << 32));
        Assert.Equal(0x00E5_0000UL, b.Unit.Translate(Rid, 5, 0x1000, 4, DmaAccess.Read).PhysicalAddress);
    }

    [Fact]
    public void Fifth_page_in_a_four_entry_iotlb_replaces_the_oldest_entry_only()
    {
        // Capacity 4 with the default 8 ways: one fully associative set of 4 ways.
        using var b = new VtdBench(VtdConfig.Legacy48Bit with { IotlbCapacity = 4 });
        ulong sl = b.SetupLegacyDevice(Rid, 2, Did);
        for (ulong p = 0; p < 5; p++)
        {
            b.Map(sl, 4, p << 12, 0x0100_0000 + (p << 12));
        }

        b.Enable(scalable: false);
        for (ulong p = 0; p < 5; p++)
        {
            Assert.Equal(0x0100_0000 + (p << 12), b.Unit.Translate(Rid, null, p << 12, 4, DmaAccess.Read).PhysicalAddress);
        }

        Assert.Equal(4, b.Unit.Statistics.IotlbEntries);
        for (ulong p = 1; p < 5; p++)
        {
            Assert.Equal(0x0100_0000 + (p << 12), b.Unit.Translate(Rid, null, p << 12, 4, DmaAccess.Read).PhysicalAddress);
        }

        Assert.Equal((4L, 5L), (b.Unit.Statistics.IotlbHits, b.Unit.Statistics.IotlbMisses)); // pages 1–4 were still held
        Assert.Equal(0x0100_0000UL, b.Unit.Translate(Rid, null, 0, 4, DmaAccess.Read).PhysicalAddress);
        Assert.Equal((4L, 6L), (b.Unit.Statistics.IotlbHits, b.Unit.Statistics.IotlbMisses)); // page 0 was replaced
        Assert.Equal(4, b.Unit.Statistics.IotlbEntries);
    }
}
