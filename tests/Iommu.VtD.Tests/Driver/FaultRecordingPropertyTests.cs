using CsCheck;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// The driver's fault handler (dmar_fault) over random faulting and succeeding DMAs from several devices, with the
/// fault interrupt masked for a while now and then (as the interrupt core's dmar_msi_mask does), so that records
/// pile up, the ring fills and PFO drops faults: every fault the unit recorded is reported once, in the order it was
/// recorded, with its source id, PASID, page address, direction and reason; a fault the unit did not record is not
/// reported; and once the interrupt is unmasked no record is left pending, PFO and PPF are clear and IP is clear.
/// </summary>
public sealed class FaultRecordingPropertyTests
{
    private const uint FstsReg = 0x34;
    private const uint FectlReg = 0x38;
    private const ulong Iova = 0x10_0000, Pa = 0x40_0000;
    private const int Pages = 8;

    [Fact]
    public void Property_every_recorded_fault_is_reported_once_in_order_and_nothing_stays_pending()
    {
        Gen<(int Op, int Device, int Page, uint Extra)> op = Gen.Select(Gen.Int[0, 9], Gen.Int[0, 3], Gen.Int[0, Pages * 2], Gen.UInt);
        Gen.Select(Gen.Bool, op.Array[1, 60]).Sample((scalable, ops) => Run(scalable, ops), iter: 100);
    }

    private static void Run(bool scalable, (int Op, int Device, int Page, uint Extra)[] ops)
    {
        using DriverBed f = New(scalable ? "Sm48" : "Legacy48");
        PciDevice[] devs = [.. Enumerable.Range(0, 4).Select(i => f.AddDevice($"0000:00:{i + 3:x2}.0"))];
        IDomain dom = f.Unmanaged();
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, devs[0]));
        Assert.Equal(Errno.None, f.Iommu.AttachDevice(dom, devs[1]));

        // Pages 0..Pages-1 of the unmanaged domain: even ones read-write, odd ones read-only; the rest unmapped.
        for (int p = 0; p < Pages; p++)
        {
            IommuProt prot = p % 2 == 0 ? RW : IommuProt.Read;
            Assert.Equal(Errno.None, f.Iommu.Map(dom, Iova + ((ulong)p * K4), Pa + ((ulong)p * K4), K4, prot));
        }

        var expected = new List<DmarFaultRecord>();
        int unit = f.Driver.Units[0].SeqId;
        bool masked = false;
        var log = new List<string>();
        foreach ((int kind, int d, int page, uint extra) in ops)
        {
            PciDevice dev = devs[d];
            string what;
            if (kind < 7)
            {
                // A DMA: devices 2 and 3 sit in their DMA default domains, where these IOVAs are not mapped.
                DmaAccess access = (extra & 1) != 0 ? DmaAccess.Write : DmaAccess.Read;
                uint? pasid = (extra & 6) == 6 ? (extra >> 12) & 0xF_FFFF : null;
                ulong iova = Iova + ((ulong)page * K4) + ((extra >> 4) & 0xF00);
                VtdTranslation t = f.Hw(dev, pasid, iova, access);
                what = $"dma {dev.RequesterId:x4}/{pasid?.ToString("x", null) ?? "-"} {access} {iova:x} -> {(t.IsFault ? $"{t.Reason} recorded {t.FaultRecorded}" : "ok")}";
                if (t.FaultRecorded)
                {
                    expected.Add(new DmarFaultRecord(unit, dev.RequesterId, pasid, iova & ~0xFFFUL, access == DmaAccess.Write, t.Reason));
                }
            }
            else if (kind < 9)
            {
                masked = !masked;
                what = masked ? "mask" : "unmask";
                f.Unit.Write32(FectlReg, masked ? 0x8000_0000u : 0);
            }
            else
            {
                // A late unmask with nothing pending and a quiet period are both fine; make sure the handler runs.
                what = "unmask";
                masked = false;
                f.Unit.Write32(FectlReg, 0);
            }

            log.Add(what);
            string trace = string.Join("\n", log);
            IReadOnlyList<DmarFaultRecord> reported = f.Driver.Faults;
            uint fsts = f.Unit.Read32(FstsReg);
            if (!masked)
            {
                Assert.True(expected.SequenceEqual(reported), $"reported\n  {string.Join("\n  ", reported)}\nexpected\n  {string.Join("\n  ", expected)}\n{trace}");
                Assert.True((fsts & 3) == 0, $"FSTS {fsts:x} after the handler ran\n{trace}");
                Assert.True(f.Unit.Read32(FectlReg) == 0, $"FECTL {f.Unit.Read32(FectlReg):x} after the handler ran\n{trace}");
            }
            else
            {
                // Nothing is reported while masked; what was reported before is a prefix of what was recorded.
                Assert.True(reported.Count <= expected.Count && expected.Take(reported.Count).SequenceEqual(reported), $"reported {reported.Count}, recorded {expected.Count}\n{trace}");
            }
        }
    }
}
