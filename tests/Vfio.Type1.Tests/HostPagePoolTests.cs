using Iommu;
using Iommu.Devices;
using Iommu.Mm;
using Vfio.Type1.Tests.Infrastructure;

namespace Vfio.Type1.Tests;

/// <summary>Issue 14 item 6: one host page pool per platform; pools never share pages.</summary>
public sealed class HostPagePoolTests
{
    private const ulong Iova = 0x10_0000;

    [Fact]
    public void Two_ForPlatform_calls_return_the_same_pool()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        HostPageAllocator a = HostPageAllocator.ForPlatform(platform);
        Assert.Same(a, HostPageAllocator.ForPlatform(platform));
        Assert.Same(a, HostPageAllocator.ForPlatform(platform, 4 * Sizes.GiB, 1 * Sizes.GiB));

        using var other = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        HostPageAllocator b = HostPageAllocator.ForPlatform(other, 0x1000_0000, 64 * Sizes.MiB);
        Assert.Same(b, HostPageAllocator.ForPlatform(other));
        Assert.Same(b, HostPageAllocator.ForPlatform(other, 0x1000_0000, 64 * Sizes.MiB));
    }

    [Fact]
    public void Two_guests_on_one_platform_get_disjoint_pages_and_never_see_each_others_bytes()
    {
        using var bed = new Type1Bed();
        PciDevice dev1 = bed.AddDevice("0000:00:03.0");
        PciDevice dev2 = bed.AddDevice("0000:00:04.0");
        Assert.NotEqual(dev1.IommuGroup!.Id, dev2.IommuGroup!.Id);

        // One process per guest, each asking for "the platform's pool" as a VMM per guest would.
        var guest1 = new ProcessAddressSpace(HostPageAllocator.ForPlatform(bed.Platform), "guest1");
        var guest2 = new ProcessAddressSpace(HostPageAllocator.ForPlatform(bed.Platform), "guest2");
        ulong va1 = Guest(bed, guest1, dev1, 0x11);
        ulong va2 = Guest(bed, guest2, dev2, 0x22);

        var pfns1 = new HashSet<ulong>();
        for (ulong p = 0; p < 4; p++)
        {
            Assert.True(guest1.TryTranslate(va1 + (p * 4096), out ulong pfn1));
            Assert.True(guest2.TryTranslate(va2 + (p * 4096), out ulong pfn2));
            pfns1.Add(pfn1);
            Assert.NotEqual(pfn1, pfn2);
        }

        for (ulong p = 0; p < 4; p++)
        {
            Assert.True(guest2.TryTranslate(va2 + (p * 4096), out ulong pfn2));
            Assert.DoesNotContain(pfn2, pfns1);
        }

        // Guest 1's device writes at the IOVA both guests mapped; guest 2's device and process still read their own bytes.
        Assert.True(dev1.DmaWrite(null, Iova, "guest1 secret"u8).IsOk);
        var seen = new byte[13];
        Assert.True(dev2.DmaRead(null, Iova, seen).IsOk);
        Assert.All(seen, b => Assert.Equal(0x22, b));
        guest2.Read(va2, seen).ThrowIfError();
        Assert.All(seen, b => Assert.Equal(0x22, b));
        guest1.Read(va1, seen).ThrowIfError();
        Assert.Equal("guest1 secret"u8.ToArray(), seen);
    }

    [Fact]
    public void Overlapping_explicit_ranges_are_refused_naming_both_ranges()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        HostPageAllocator.ForPlatform(platform, 4 * Sizes.GiB, 64 * Sizes.MiB);

        ArgumentException e = Assert.Throws<ArgumentException>(() => HostPageAllocator.ForPlatform(platform, (4 * Sizes.GiB) + (32 * Sizes.MiB), 64 * Sizes.MiB));
        Assert.Contains("[0x102000000, 0x106000000)", e.Message, StringComparison.Ordinal);
        Assert.Contains("[0x100000000, 0x104000000)", e.Message, StringComparison.Ordinal);

        Assert.Throws<ArgumentException>(() => new HostPageAllocator(platform.Memory, 4 * Sizes.GiB, 2 * Sizes.MiB));

        // A disjoint range is a second, independent pool.
        HostPageAllocator disjoint = HostPageAllocator.ForPlatform(platform, 8 * Sizes.GiB, 64 * Sizes.MiB);
        Assert.NotSame(HostPageAllocator.ForPlatform(platform), disjoint);
    }

    [Fact]
    public void A_pool_over_the_page_table_frames_is_refused()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        ulong tables = platform.Frames.RegionBase;
        ArgumentException e = Assert.Throws<ArgumentException>(() => HostPageAllocator.ForPlatform(platform, tables - (32 * Sizes.MiB), 64 * Sizes.MiB));
        Assert.Contains("page-table frame region", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new HostPageAllocator(platform.Memory, tables, 1 * Sizes.MiB));
    }

    [Theory]
    [InlineData(2UL)] // the default pool, 1 GiB at 4 GiB, lies past the end of memory
    [InlineData(5UL)] // it ends where memory does, under the 256 MiB of page-table frames at the top
    public void The_default_pool_on_a_platform_too_small_for_it_says_what_to_change(ulong gib)
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = gib * Sizes.GiB });
        ArgumentException e = Assert.ThrowsAny<ArgumentException>(() => HostPageAllocator.ForPlatform(platform));
        Assert.Contains("default host page pool [0x100000000, 0x140000000)", e.Message, StringComparison.Ordinal);
        Assert.Contains("PlatformOptions.MemorySize", e.Message, StringComparison.Ordinal);
        Assert.Contains("physicalBase", e.Message, StringComparison.Ordinal);

        // An explicit range that fits works on the same platform, and the default call then finds it.
        HostPageAllocator pool = HostPageAllocator.ForPlatform(platform, 1 * Sizes.GiB, 64 * Sizes.MiB);
        Assert.Same(pool, HostPageAllocator.ForPlatform(platform));
    }

    [Fact]
    public void The_default_pool_fits_a_platform_of_5_GiB_plus_its_page_table_frames()
    {
        using var platform = new Platform(new PlatformOptions { MemorySize = (5 * Sizes.GiB) + (256 * Sizes.MiB) });
        Assert.Equal(4 * Sizes.GiB, HostPageAllocator.ForPlatform(platform).Base);
    }

    [Fact]
    public void Two_platforms_have_independent_pools()
    {
        using var p1 = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        using var p2 = new Platform(new PlatformOptions { MemorySize = 16 * Sizes.GiB, TableMemorySize = 64 * Sizes.MiB });
        HostPageAllocator a = HostPageAllocator.ForPlatform(p1, 4 * Sizes.GiB, 64 * Sizes.MiB);
        HostPageAllocator b = HostPageAllocator.ForPlatform(p2, 4 * Sizes.GiB, 64 * Sizes.MiB);
        Assert.NotSame(a, b);
        Assert.Same(p1.Memory, a.Memory);
        Assert.Same(p2.Memory, b.Memory);
    }

    // A guest: container + group of dev, a 4-page buffer filled with fill, mapped at Iova.
    private static ulong Guest(Type1Bed bed, ProcessAddressSpace proc, PciDevice dev, byte fill)
    {
        VfioContainer c = bed.Vfio.OpenContainer(proc, out _);
        bed.Vfio.OpenGroup(proc, dev.IommuGroup!.Id, out VfioGroup? g, out _).ThrowIfError();
        g!.SetContainer(c).ThrowIfError();
        c.SetIommu(Uapi.VfioUapi.VFIO_TYPE1v2_IOMMU).ThrowIfError();
        ulong va = proc.Mmap(4 * 4096);
        var page = new byte[4096];
        Array.Fill(page, fill);
        for (ulong p = 0; p < 4; p++)
        {
            proc.Write(va + (p * 4096), page).ThrowIfError();
        }

        c.MapDma(Type1Bed.Map(va, Iova, 4 * 4096)).ThrowIfError();
        return va;
    }
}
