using System.Numerics;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// iommu_map with several things wrong at once: the errno is the one 5.15's first failing check gives
/// (<c>__iommu_map</c>, then <c>intel_iommu_map_pages</c> / <c>intel_iommu_map</c> / <c>__domain_mapping</c>
/// per <c>iommu_pgsize</c> run), and a failure leaves the tables as they were.
/// </summary>
public sealed class MapErrnoPrecedencePropertyTests
{
    [Flags]
    private enum Fault
    {
        None = 0,
        NoPageSizes = 1 << 0,
        NotPaging = 1 << 1,
        UnalignedIova = 1 << 2,
        UnalignedPaddr = 1 << 3,
        UnalignedSize = 1 << 4,
        NoPermission = 1 << 5,
        BeyondWidth = 1 << 6,
        StraddlesWidth = 1 << 7,
        NoFrame = 1 << 8,
        WrapsPast2To64 = 1 << 9,
    }

    private const int FaultKinds = 10;

    // The 4 KiB page mapped before every case (not for the identity domain): its tables exist, so a run
    // that stays in its 2 MiB (4 KiB pages) or its 1 GiB (2 MiB pages) needs no new table frame.
    private const ulong PreIova = G1 + 0x1000, PrePa = 0x7000_0000;

    private sealed record Expect(Errno Errno, int FailingRun, ulong MaxAddr, string Check);

    // Whether writing [start, end) in pages of pgsize needs a table frame the pre-mapped page's walk did
    // not create. A failed allocation creates nothing, so only the initial tables count.
    private static bool NeedsFrame(bool premapped, ulong pgsize, ulong start, ulong end)
    {
        if (!premapped)
        {
            return true;
        }

        int shift = pgsize == K4 ? 21 : pgsize == M2 ? 30 : 39;
        return start >> shift != PreIova >> shift || (end - 1) >> shift != PreIova >> shift;
    }

    // 5.15's checks in order: __iommu_map (ENODEV, EINVAL type, EINVAL alignment), then for each
    // iommu_pgsize run intel_iommu_map (max_addr raised, EFAULT beyond the width), __domain_mapping (EINVAL
    // without R/W, ENOMEM for a missing table). A run that reaches past 2^64 passes 5.15's width test (its
    // end wraps) and hits __domain_mapping's BUG_ON; we give EFAULT there too, before the permission check.
    private static Expect Reference(ulong bitmap, bool paging, int gaw, ulong maxAddr, bool premapped, bool noFrame, ulong iova, ulong paddr, ulong size, IommuProt prot)
    {
        if (bitmap == 0)
        {
            return new(Errno.ENODEV, -1, maxAddr, "page sizes");
        }

        if (!paging)
        {
            return new(Errno.EINVAL, -1, maxAddr, "no page tables");
        }

        ulong min = 1UL << BitOperations.TrailingZeroCount(bitmap);
        if (((iova | paddr | size) & (min - 1)) != 0)
        {
            return new(Errno.EINVAL, -1, maxAddr, "unaligned");
        }

        for (int run = 0; size != 0; run++)
        {
            ulong pgsize = IommuCore.PgSize(bitmap, iova, paddr, size, out ulong count);
            ulong len = pgsize * count, end = iova + len;
            if (maxAddr < end)
            {
                if (gaw < 64 && (1UL << gaw) < end)
                {
                    return new(Errno.EFAULT, run, maxAddr, "address width");
                }

                maxAddr = end;
            }
            else if (end <= iova)
            {
                return new(Errno.EFAULT, run, maxAddr, "address space");
            }

            if ((prot & (IommuProt.Read | IommuProt.Write)) == 0)
            {
                return new(Errno.EINVAL, run, maxAddr, "read or write");
            }

            if (noFrame && NeedsFrame(premapped, pgsize, iova, end))
            {
                return new(Errno.ENOMEM, run, maxAddr, "no frame");
            }

            iova += len;
            paddr += len;
            size -= len;
        }

        return new(Errno.None, -1, maxAddr, "");
    }

    // Every leaf of the domain's own table, first- or second-level.
    private static List<(ulong Iova, ulong Pa, ulong Size)> AllLeaves(DmarDomain d)
    {
        var list = new List<(ulong, ulong, ulong)>();
        if (d.UseFirstLevel)
        {
            d.FirstLevelTable.ForEachLeaf((i, p, s, _) => list.Add((i, p, s)));
        }
        else
        {
            d.PageTable.ForEachLeaf((i, p, s, _) => list.Add((i, p, s)));
        }

        return list;
    }

    [Fact]
    public void MapErrnoIsTheFirstFailingCheckOf515AndAFailureChangesNothing()
    {
        int seed = Environment.GetEnvironmentVariable("IOMMU_PROPERTY_SEED") is string s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : Random.Shared.Next();
        var rng = new Random(seed);
        var seen = new HashSet<Errno>();
        for (int i = 0; i < 600; i++)
        {
            int caseSeed = rng.Next();
            string? why = RunCase(caseSeed, seen);
            if (why is not null)
            {
                Assert.Fail($"seed {seed}, case {i} (case seed {caseSeed}): {why}");
            }
        }

        // The generator reaches every check.
        Assert.True(seen.IsSupersetOf([Errno.None, Errno.ENODEV, Errno.EINVAL, Errno.EFAULT, Errno.ENOMEM]), $"seed {seed}: errnos seen {string.Join(",", seen)}");
    }

    private static string? RunCase(int caseSeed, HashSet<Errno> seen)
    {
        var rng = new Random(caseSeed);
        string configName = rng.Next(3) switch { 0 => "Legacy39", 1 => "Sm48", _ => "Fl48" };
        using DriverBed f = configName == "Fl48" ? FirstLevelTestKit.NewFl(configName) : New(configName);

        int nFaults = rng.Next(4);
        Fault faults = Fault.None;
        for (int k = 0; k < nFaults; k++)
        {
            faults |= (Fault)(1 << rng.Next(FaultKinds));
        }

        IDomain dom;
        PciDevice? dev = null;
        bool premapped = false;
        if (faults.HasFlag(Fault.NotPaging))
        {
            dom = f.Iommu.DomainAllocType(f.Pci, DomainType.Identity) ?? throw new InvalidOperationException("no identity domain");
        }
        else
        {
            dom = f.Unmanaged();
            if (rng.Next(3) != 0)
            {
                dev = f.AddDevice("0000:00:02.0");
                Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, dev));
            }

            Assert.Equal(Errno.None, f.Iommu.Map(dom, PreIova, PrePa, K4, RW));
            premapped = true;
        }

        var dmar = (DmarDomain)dom;
        int gaw = dmar.Gaw;

        // A request: 4 KiB pages or 2 MiB runs, near the pre-mapped page, in a fresh 2 MiB, or in another 1 GiB.
        ulong pages = rng.Next(4) switch
        {
            0 => 1,
            1 => (ulong)rng.Next(2, 9),
            2 => 512 + (ulong)rng.Next(0, 5),
            _ => 1024,
        };
        ulong iova = rng.Next(4) switch
        {
            0 => G1 + M2 - ((ulong)rng.Next(1, 7) * K4),
            1 => G1 + 0x2000 + ((ulong)rng.Next(0, 64) * K4),
            2 => G1 + ((ulong)rng.Next(2, 9) * M2) + (rng.Next(2) == 0 ? 0 : (ulong)rng.Next(1, 512) * K4),
            _ => (3 * G1) + ((ulong)rng.Next(0, 9) * M2),
        };
        if (faults.HasFlag(Fault.BeyondWidth))
        {
            iova = (1UL << gaw) + ((ulong)rng.Next(0, 8) * M2);
        }
        else if (faults.HasFlag(Fault.WrapsPast2To64))
        {
            ulong below = (ulong)rng.Next(1, 5);
            iova = unchecked(0UL - (below * K4));
            pages = Math.Max(pages, below + 1);
        }
        else if (faults.HasFlag(Fault.StraddlesWidth))
        {
            ulong below = (ulong)rng.Next(1, 5);
            iova = (1UL << gaw) - (below * K4);
            pages = Math.Max(pages, below + 1);
        }

        ulong size = pages * K4;
        if (iova < PreIova + K4 && PreIova < iova + size)
        {
            iova += 4 * M2; // never over the pre-mapped page: an overlapping map is a caller bug
        }

        ulong paddr = rng.Next(2) == 0
            ? 0x8000_0000 + (iova & (G1 - 1))                 // congruent: superpages possible
            : 0x1_0000_0000 + ((ulong)rng.Next(0, 4096) * K4);
        IommuProt prot = rng.Next(4) switch
        {
            0 => IommuProt.Read,
            1 => IommuProt.Write,
            2 => RW,
            _ => RW | IommuProt.Cache,
        };
        if (faults.HasFlag(Fault.NoPermission))
        {
            prot = rng.Next(2) == 0 ? IommuProt.None : IommuProt.Cache | IommuProt.NoExec;
        }

        ulong odd = (ulong)rng.Next(1, 4096);
        iova += faults.HasFlag(Fault.UnalignedIova) ? odd : 0;
        paddr += faults.HasFlag(Fault.UnalignedPaddr) ? odd : 0;
        size += faults.HasFlag(Fault.UnalignedSize) ? odd : 0;

        ulong bitmap = faults.HasFlag(Fault.NoPageSizes) ? 0 : dom.PgsizeBitmap;
        bool paging = dom.Type.IsPaging();
        ulong maxBefore = dmar.MaxAddr;
        Expect want = Reference(bitmap, paging, gaw, maxBefore, premapped, faults.HasFlag(Fault.NoFrame), iova, paddr, size, prot);

        var leavesBefore = premapped ? AllLeaves(dmar) : [];
        ulong savedBitmap = dom.PgsizeBitmap;
        if (faults.HasFlag(Fault.NoPageSizes))
        {
            dom.PgsizeBitmap = 0;
        }

        if (faults.HasFlag(Fault.NoFrame))
        {
            f.Platform.Frames.FailNth(1);
        }

        Errno got = f.Iommu.Map(dom, iova, paddr, size, prot);
        string? detail = ErrorDetail.LastMessage;
        Errno detailErrno = ErrorDetail.LastErrno;
        f.Platform.Frames.FailNth(0);
        dom.PgsizeBitmap = savedBitmap;
        seen.Add(got);

        string call = $"{configName} faults [{faults}] attached={dev is not null} gaw={gaw} map(iova 0x{iova:x}, pa 0x{paddr:x}, size 0x{size:x}, {prot}) bitmap 0x{bitmap:x}";
        if (got != want.Errno)
        {
            return $"{call}: got {got}, 5.15 gives {want.Errno} ({want.Check}, run {want.FailingRun}); detail: {detail}";
        }

        if (got == Errno.None)
        {
            ulong last = iova + size - K4;
            if (f.Iommu.IovaToPhys(dom, iova) != paddr || f.Iommu.IovaToPhys(dom, last) != paddr + size - K4)
            {
                return $"{call}: mapped, but iova_to_phys does not reach [0x{paddr:x}, 0x{paddr + size:x})";
            }

            return dmar.MaxAddr != want.MaxAddr ? $"{call}: max_addr 0x{dmar.MaxAddr:x}, 5.15 0x{want.MaxAddr:x}" : null;
        }

        if (detailErrno != got || detail is null || !detail.Contains(want.Check, StringComparison.OrdinalIgnoreCase))
        {
            return $"{call}: {got} with detail ({detailErrno}) '{detail}', which does not name the check that failed ('{want.Check}')";
        }

        if (premapped)
        {
            var leavesAfter = AllLeaves(dmar);
            if (!leavesAfter.SequenceEqual(leavesBefore))
            {
                return $"{call}: failed with {got} but the table changed: before [{string.Join(", ", leavesBefore)}] after [{string.Join(", ", leavesAfter)}]";
            }

            if (f.Iommu.IovaToPhys(dom, PreIova) != PrePa)
            {
                return $"{call}: failed with {got} and lost the mapping it was not asked to touch";
            }
        }

        // max_addr: raised by every run that passed the width check, the failing one included; the unwind
        // of earlier runs only lowers it when it ends exactly there, so compare only when nothing was unwound.
        if (want.FailingRun <= 0 && dmar.MaxAddr != want.MaxAddr)
        {
            return $"{call}: failed with {got}; max_addr 0x{dmar.MaxAddr:x}, 5.15 leaves 0x{want.MaxAddr:x}";
        }

        if (dev is not null)
        {
            Span<byte> b = stackalloc byte[8];
            ulong probe = iova & ~(K4 - 1);
            bool translated = f.Iommu.IovaToPhys(dom, probe) != 0;
            if (dev.DmaRead(null, PreIova, b).Status != DmaStatus.Ok || (dev.DmaRead(null, probe, b).Status == DmaStatus.Ok) != translated)
            {
                return $"{call}: failed with {got}, but device DMA disagrees with the unchanged tables";
            }
        }

        return null;
    }
}
