using Iommu.Devices;
using Iommu.Domains;
using Iommu.Mm;
using Iommu.Tests.Shared;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Driver;
using Iommu.VtD.Tests.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// The fault counters (<see cref="VtdActivity.FaultsByReason"/>, <c>iommu.vtd.faults</c>, <c>iommu.faults</c>) and the
/// driver's fault log against counts the test keeps, over random sequences on a scalable first-level unit with
/// device-TLBs and a page request queue: faulting DMA with and without PASID, ATS translation requests (answered
/// with less access, or Unsupported Request), page requests (good, for a PASID nobody bound, without PASID), and the
/// fault event masked for a while so that more faults arrive than there are fault-recording registers (PFO: the
/// rest are lost, yet seen).
/// </summary>
public sealed class FaultMetricsPropertyTests
{
    private const ulong Page = 4096;

    [Fact]
    public void Random_fault_ats_and_page_request_sequences_keep_the_fault_counters_equal_to_the_observed_count()
    {
        for (int seed = 1; seed <= 12; seed++)
        {
            try
            {
                RunSequence(seed, steps: 200);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                throw new InvalidOperationException($"seed {seed}: {e.Message}", e);
            }
        }
    }

    private static void RunSequence(int seed, int steps)
    {
        var rng = new Random(seed);
        (DriverBed f, PciDevice sva, HostPageAllocator pages) = IopfTestKit.Bed();
        using DriverBed owner = f;
        PciDevice plain = f.AddDevice("0000:00:07.0");
        IDomain dom = f.Iommu.DomainAlloc(f.Pci)!;
        f.Iommu.AttachDevice(dom, plain).ThrowIfError();
        using var mm = new ProcessAddressSpace(pages, "p");
        ulong va = mm.Mmap(16 * Page);
        for (ulong i = 0; i < 8; i++)
        {
            Assert.Equal(Errno.None, mm.Write(va + (i * Page), [1])); // the first half is populated, the rest faults
        }

        uint pasid = f.Iommu.SvaGetPasid(IopfTestKit.Bind(f, sva, mm));
        using var meters = new MeterReader(f.Platform, IommuCore.MeterName, VtdMetrics.MeterName);
        int records = f.Unit.Config.FaultRecordCount;

        // What the test saw, from the unit's state at the start.
        var faults = new Dictionary<VtdFaultReason, long>(f.Unit.Activity.FaultsByReason);
        long recorded = f.Driver.Faults.Count, lost = 0, pageRequests = 0;
        bool masked = false, pfo = false;
        int pending = 0; // records the masked fault event left for the driver
        byte[] buffer = new byte[64];
        for (int step = 0; step < steps; step++)
        {
            ulong at = va + ((ulong)rng.Next(16) * Page) + (ulong)rng.Next(64);
            switch (rng.Next(9))
            {
                case 0 or 1 or 2:
                {
                    // Faulting (or not) DMA: by PASID through the process, or untagged through an empty domain.
                    bool tagged = rng.Next(2) == 0;
                    PciDevice dev = tagged ? sva : plain;
                    DmaResult r = rng.Next(2) == 0 ? dev.DmaRead(tagged ? pasid : null, at, buffer) : dev.DmaWrite(tagged ? pasid : null, at, buffer);
                    if (r.Status == DmaStatus.Fault)
                    {
                        Seen(r.FaultReason.ToVtdFaultReason(), recordable: true);
                    }
                    else
                    {
                        Assert.True(r.IsOk && tagged, $"step {step}: {r}");
                    }

                    break;
                }

                case 3 or 4:
                {
                    // An ATS translation request: a page that is absent or read-only is answered with less access (no fault).
                    bool tagged = rng.Next(3) != 0;
                    AtsCompletion c = f.Unit.TranslationRequest(sva, tagged ? pasid : null, at, write: rng.Next(2) == 0);
                    Assert.True(c.Success, $"step {step}: {c}");
                    break;
                }

                case 5 or 6:
                {
                    // A page request: for the bound PASID (reported to the core), one nobody bound or none (bad requests).
                    int kind = rng.Next(4);
                    uint? p = kind switch { 0 => null, 1 => pasid + 50, _ => pasid };
                    bool write = rng.Next(2) == 0;
                    if (IopfTestKit.Request(f, sva, p, at & ~0xFFFUL, prgi: rng.Next(512), lpig: rng.Next(3) != 0, rd: !write, wr: write) && kind >= 2)
                    {
                        pageRequests++;
                    }

                    break;
                }

                case 7 when rng.Next(4) == 0:
                {
                    // Mask or unmask the fault event (for long stretches, so that faults outnumber the records): unmasking
                    // sends the pending interrupt and the driver drains the records.
                    masked = !masked;
                    f.Unit.Write32(VtdRegister.Fectl, masked ? VtdRegister.EventControlIm : 0);
                    if (!masked)
                    {
                        (pending, pfo) = (0, false);
                    }

                    break;
                }

                case 8:
                    Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(sva));
                    break;

                default:
                    break;
            }
        }

        f.Unit.Write32(VtdRegister.Fectl, 0);
        Assert.Equal(Errno.None, f.Iommu.IopfQueueFlushDev(sva));

        // The unit's own view, the driver's log and the instruments.
        Assert.Equal(faults.OrderBy(p => p.Key), f.Unit.Activity.FaultsByReason.OrderBy(p => p.Key));
        Assert.Equal(recorded, f.Driver.Faults.Count);
        Assert.Equal(faults.Values.Sum(), recorded + lost);
        meters.Collect();
        foreach ((VtdFaultReason reason, long n) in faults)
        {
            Assert.Equal(n, meters[$"iommu.vtd.faults|reason=0x{(int)reason:x2}"]);
        }

        Assert.Equal(faults.Count, meters.Keys.Count(k => k.StartsWith("iommu.vtd.faults|", StringComparison.Ordinal)));
        Assert.Equal(pageRequests, meters["iommu.faults|path=iommu_report_device_fault|type=page_request"]);
        Assert.Equal(0, meters["iommu.faults|path=iommu_report_device_fault|type=dma_unrecoverable"]);
        Assert.Equal(0, meters["iommu.faults|path=report_iommu_fault"]);

        // A recordable fault: the driver logs it at once unless the event is masked; then it takes a free record, or
        // finds the next one pending and sets PFO, and is lost (as is every fault while PFO is set).
        void Seen(VtdFaultReason reason, bool recordable)
        {
            faults[reason] = faults.GetValueOrDefault(reason) + 1;
            if (!recordable)
            {
                return;
            }

            if (masked && (pfo || pending == records))
            {
                (pfo, lost) = (true, lost + 1);
            }
            else
            {
                recorded++;
                pending += masked ? 1 : 0;
            }
        }
    }
}
