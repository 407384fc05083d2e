using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The fault interrupt fires on the thread whose DMA raised it, so two devices' faults can run the driver's fault
/// handler on two threads at once. Each fault the unit recorded is read and cleared once (5.15's <c>dmar_fault</c>
/// holds the unit's register lock over its walk of the fault recording registers), and none is left behind: a
/// record added during the walk raises no event of its own (PPF is still set), so the walk goes on while records are
/// pending. Before, one lap over the registers left such a record set, PPF stayed set, and the unit never raised
/// the fault event again: the faults of every device behind it went unreported.
/// </summary>
public sealed class ConcurrentFaultTests
{
    [Theory]
    [InlineData("Legacy48")]
    [InlineData("Sm48")]
    public void Faults_raised_on_many_threads_at_once_are_each_reported_once(string config)
    {
        using DriverBed f = New(config);
        IDomain dom = f.Unmanaged();
        PciDevice[] devs = [.. Enumerable.Range(0, 4).Select(i => f.AddDevice($"0000:00:{i + 3:x2}.0"))];
        foreach (PciDevice d in devs)
        {
            Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, d));
        }

        // Every DMA faults at an address no other DMA uses, so a record seen twice was read twice.
        const int PerDevice = 3_000;
        var threads = devs.Select((d, t) => new Thread(() =>
        {
            byte[] b = new byte[8];
            for (int i = 0; i < PerDevice; i++)
            {
                d.DmaRead(null, ((ulong)((t * PerDevice) + i) + 1) << 12, b);
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => Assert.True(t.Join(TimeSpan.FromSeconds(60))));

        // Reporting is still alive: one more fault, on a quiet unit, is reported.
        devs[0].DmaRead(null, 0x7FFF_F000, new byte[8]);
        Assert.Contains(f.Driver.Faults, r => r.Address == 0x7FFF_F000 && r.SourceId == devs[0].RequesterId);

        IReadOnlyList<DmarFaultRecord> faults = f.Driver.Faults;
        Assert.True(faults.Count > 100, $"only {faults.Count} faults reported");
        var twice = faults.GroupBy(r => (r.SourceId, r.Address)).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.True(twice.Count == 0, $"{twice.Count} of {faults.Count} fault records were reported more than once, e.g. {twice.FirstOrDefault()}");
    }
}
