using System.Collections.Concurrent;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Reliability.Tests.Infrastructure;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.Reliability.Tests.Concurrency;

/// <summary>
/// A new domain has more page-table levels than a 48-bit unit walks, and its first attach to that unit drops
/// the extra top levels (prepare_domain_attach_device). Maps on another thread used to walk the table while it
/// changed under them: a walk that read the old level count with the new root (or started before the drop and
/// installed into a root that had just become one level lower) built tables one level off, so a map that
/// succeeded was lost and a table frame showed up as a leaf (a device could read and write page-table memory),
/// and the old top table was freed while a walk still used it. Found by ConcurrentIsolationPropertyTests.
/// </summary>
public sealed class FirstAttachLevelDropRaceTests
{
    private const ulong PaBase = 0x2_0000_0000;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Maps_racing_the_first_attach_all_land_and_nothing_else_does(bool scalable)
    {
        VtdConfig config = scalable ? VtdConfig.ScalableMode48Bit : VtdConfig.Legacy48Bit;
        using var bed = new FailNthVtdBed(config, scalable);
        PciDevice dev = bed.AddDevice("0000:00:03.0");
        var errors = new ConcurrentQueue<string>();
        int rounds = (int)Math.Max(ReliabilityBudget.Ops / 200, 300);
        for (int round = 0; round < rounds && errors.IsEmpty; round++)
        {
            DmarDomain dom = bed.Unmanaged();
            var mapped = new ConcurrentDictionary<ulong, ulong>();
            using var go = new Barrier(3);
            var mappers = Enumerable.Range(0, 2).Select(m => new Thread(() =>
            {
                go.SignalAndWait();
                for (int i = 0; i < 32; i++)
                {
                    // A new 1 GiB region each time, so every map installs tables from the top down.
                    ulong iova = ((ulong)((i * 2) + m + 1) * Sizes.GiB) + ((ulong)m * Sizes.Page);
                    ulong pa = PaBase + ((ulong)((i * 2) + m) * Sizes.Page);
                    if (bed.Iommu.Map(dom, iova, pa, Sizes.Page, IommuProt.Read | IommuProt.Write) == Errno.None)
                    {
                        mapped[iova] = pa;
                    }
                }
            }) { IsBackground = true }).ToList();
            mappers.ForEach(t => t.Start());
            go.SignalAndWait();
            Thread.SpinWait(round % 64 * 16);
            Errno e = bed.Iommu.AttachDevice(dom, dev);
            mappers.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(30)), "a mapper hung"));
            if (e != Errno.None)
            {
                errors.Enqueue($"round {round}: attach: {e}");
                break;
            }

            foreach ((ulong iova, ulong pa) in mapped)
            {
                ulong got = bed.Iommu.IovaToPhys(dom, iova);
                if (got != pa)
                {
                    errors.Enqueue($"round {round}: the map of 0x{iova:x} to 0x{pa:x} succeeded, yet it translates to 0x{got:x}");
                }
            }

            dom.PageTable.ForEachLeaf((iova, pa, size, pte) =>
            {
                if (!mapped.TryGetValue(iova, out ulong want) || want != pa || size != Sizes.Page)
                {
                    errors.Enqueue($"round {round}: a leaf nobody mapped: 0x{iova:x} -> 0x{pa:x} size 0x{size:x}");
                }
            });
            bed.Iommu.DetachDevice(dom, dev);
            bed.Iommu.DomainFree(dom);
        }

        Assert.True(errors.IsEmpty, string.Join("\n", errors.Take(10)));
    }
}
