using CsCheck;
using Iommu.Devices;
using Iommu.VtD.Hardware;
using Iommu.VtD.Tests.Hardware.Infrastructure;

namespace Iommu.VtD.Tests.Hardware;

/// <summary>
/// Edges of the unit's software-visible interface (capability limits a guest or device can exceed):
/// requests whose PASID or address lies beyond what CAP/ECAP report. Each test names the rule of the
/// VT-d specification's register description it checks.
/// </summary>
public class CapabilityLimitTests
{
    private const ushort Rid = 0x0300;

    // ---- ECAP.PSS (spec 11.4.3 / 10.4.3, Extended Capability Register, PSS field) ----

    [Fact]
    public void Request_with_pasid_beyond_ecap_pss_is_not_translated()
    {
        // ECAP.PSS: "A value of N in this field indicates hardware supports PASID field of N+1 bits.
        // Requests-with-PASID with PASID value beyond the limit specified by this field are treated as
        // error by the remapping hardware." With PasidWidth = 8 (PSS = 7) PASID 0x100 is beyond the limit,
        // even though the tables (PDTS = 7) hold a valid second-level entry for it.
        using var b = new VtdBench(VtdConfig.ScalableMode48Bit with { PasidWidth = 8 });
        Assert.Equal(7UL, (b.Ecap >> 35) & 0x1F);
        const uint pasid = 0x100;
        (_, ulong sl) = b.SetupScalableDevice(Rid, pasid, aw: 2, did: 5);
        b.Map(sl, 4, 0x4000, 0x9000);
        b.Enable(scalable: true);

        // Control: a PASID within the 8-bit limit through the same kind of entry translates.
        ulong dir2 = b.AllocFrame();
        b.ScalableContext(0x0308, dir2, pdts: 7);
        ulong sl2 = b.AllocFrame();
        b.PasidEntry(dir2, 0xFF, VtdBench.PasidEntryLow(sl2, 2, 2), did: 6);
        b.Map(sl2, 4, 0x4000, 0xA000);
        Assert.Equal(VtdTranslationStatus.Translated, b.Unit.Translate(0x0308, 0xFFu, 0x4000, 4, DmaAccess.Read).Status);

        VtdTranslation t = b.Unit.Translate(Rid, pasid, 0x4000, 4, DmaAccess.Read);
        Assert.NotEqual(VtdTranslationStatus.Translated, t.Status);
    }

    // ---- CAP.MGAW (spec 11.4.2 / 10.4.2, Capability Register, MGAW field) ----

    [Fact]
    public void Ats_translation_request_above_mgaw_completes_with_r_w_0_instead_of_unsupported_request()
    {
        // CAP.MGAW: "If the value in this field is X, untranslated and translated DMA requests to addresses
        // above 2^(X+1)-1 are always blocked by hardware. Translation requests to address above 2^(X+1)-1
        // from allowed devices return a null Translation Completion Data Entry with R=W=0."
        // Device 03:00.0 is allowed (scalable context with DTE, second-level PASID entry, AW = 48-bit);
        // MGAW is 48 bits, so a translation request for 2^48 must get a successful completion with R=W=0.
        VtdConfig config = VtdConfig.ScalableModeSva48Bit;
        using var platform = new Platform(new PlatformOptions { MemorySize = 256 * Sizes.MiB });
        var b = new VtdBench(config, platform.Memory); // memory owned by the platform
        PciBus pci = platform.AddPciBus();
        pci.AddDmaRemapper(b.Unit, includeAll: true);
        PciDevice dev = pci.AddDevice(new PciDeviceSpec("0000:03:00.0") { PasidWidth = 20, Ats = true });
        dev.EnablePasid().ThrowIfError();
        dev.EnableAts().ThrowIfError();

        Assert.Equal(47UL, (b.Cap >> 16) & 0x3F);
        ulong dir = b.AllocFrame();
        b.ScalableContext(Rid, dir, pdts: 7, extraLow: 1UL << 2); // DTE
        ulong sl = b.AllocFrame();
        b.PasidEntry(dir, 0, VtdBench.PasidEntryLow(sl, 2, 2), did: 5);
        b.Map(sl, 4, 0x4000, 0x9000);
        b.Enable(scalable: true);

        // Control: the device is allowed, a mapped page completes normally.
        Assert.Equal(new AtsCompletion(true, 0x9000, 4096, true, false, DmaFaultReason.None), b.Unit.TranslationRequest(dev, null, 0x4000, write: false));

        AtsCompletion beyond = b.Unit.TranslationRequest(dev, null, 1UL << 48, write: false);
        Assert.Equal(new AtsCompletion(true, 0, 4096, false, false, DmaFaultReason.None), beyond);

        // Either side of the edge, reads and writes: the last page below it as mapped, every page above it null, and no
        // request above it leaves a fault record (FSTS.PPF stays clear).
        b.Map(sl, 4, (1UL << 48) - 0x1000, 0xA000);
        for (long pages = -1; pages <= 3; pages++)
        {
            foreach (bool write in (bool[])[false, true])
            {
                ulong address = (ulong)((long)(1UL << 48) + (pages * 4096)) + 0x80;
                AtsCompletion c = b.Unit.TranslationRequest(dev, null, address, write);
                Assert.Equal(pages < 0 ? new AtsCompletion(true, 0xA000, 4096, true, write, DmaFaultReason.None) : new AtsCompletion(true, 0, 4096, false, false, DmaFaultReason.None), c);
            }
        }

        Assert.Equal(0u, b.Fsts & 2);
    }

    [Fact]
    public void Requests_translate_exactly_when_their_pasid_fits_ecap_pss()
    {
        Gen.Select(Gen.Int[1, 14], Gen.Int[-2, 1]).Sample((width, delta) =>
        {
            uint pasid = (uint)((1 << width) + delta);
            using var b = new VtdBench(VtdConfig.ScalableMode48Bit with { PasidWidth = width });
            (_, ulong sl) = b.SetupScalableDevice(Rid, pasid, aw: 2, did: 5);
            b.Map(sl, 4, 0x4000, 0x9000);
            b.Enable(scalable: true);

            VtdTranslation t = b.Unit.Translate(Rid, pasid, 0x4000, 4, DmaAccess.Read);

            if (pasid < 1u << width)
            {
                Assert.Equal(VtdTranslationStatus.Translated, t.Status);
                Assert.Equal(0x9000UL, t.PhysicalAddress);
            }
            else
            {
                Assert.Equal(VtdTranslationStatus.Fault, t.Status);
                Assert.Equal(VtdFaultReason.PasidBeyondDirectory, t.Reason);
            }
        }, iter: 120, threads: 1);
    }

    // ECAP.PSS for page requests: one whose PASID is wider than the unit's is refused as a translation's is (0x46),
    // and nothing reaches the page request queue; one just inside the width is queued.
    [Fact]
    public void Page_request_with_pasid_beyond_ecap_pss_is_not_queued()
    {
        var config = VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true, PageRequests = true, PageRequestDrain = true, PasidWidth = 8 };
        using var r = new AtsRig(config: config);

        Assert.False(r.Unit.PageRequest(r.Dev, new PageRequestMessage(0x100, 0x5000, Read: true, Write: false, Execute: false, Privileged: false, 1, LastInGroup: true)));
        Assert.NotEqual(0u, r.Unit.Read32(0x34) & 2); // FSTS.PPF: the fault was recorded

        Assert.True(r.Unit.PageRequest(r.Dev, new PageRequestMessage(0xFF, 0x5000, Read: true, Write: false, Execute: false, Privileged: false, 2, LastInGroup: true)));
        Assert.Equal(0xFFUL, (r.Descriptor(0).Q0 >> 32) & 0xFFFFF);
    }
}
