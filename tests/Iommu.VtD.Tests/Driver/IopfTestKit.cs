using Iommu.Devices;
using Iommu.Mm;
using Iommu.VtD.Driver;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>A first-level unit with device-TLBs, a page request queue and PRQ drain, and an ATS+PRI device with SVA enabled.</summary>
internal static class IopfTestKit
{
    public static VtdConfig Config { get; } = VtdConfig.ScalableModeSva48Bit;

    public static (DriverBed F, PciDevice Dev, HostPageAllocator Pages) Bed(VtdConfig? config = null)
    {
        DriverBed f = FirstLevelTestKit.NewFl(config ?? Config, FirstLevelPolicy.AllWhenEveryUnitHasFlts);
        PciDevice dev = SvaDevice(f, "0000:00:05.0");
        return (f, dev, HostPageAllocator.ForPlatform(f.Platform));
    }

    public static PciDevice SvaDevice(DriverBed f, string bdf)
    {
        PciDevice dev = f.Pci.AddDevice(new PciDeviceSpec(bdf) { PasidWidth = 20, Ats = true, Pri = true, Acs = true });
        Assert.True(dev.AtsEnabled && dev.PriEnabled); // iommu_enable_dev_iotlb at attach
        Assert.Equal(Errno.None, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Iopf));
        Assert.Equal(Errno.None, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Sva));
        EnableDteAndPre(f, dev);
        return dev;
    }

    /// <summary>The driver set DTE and PRE in the device's scalable context entry (without them the unit refuses translation requests, 0x44, and page requests, 0x47).</summary>
    public static void EnableDteAndPre(DriverBed f, PciDevice dev)
    {
        IntelIommuUnit unit = f.Driver.Units[0];
        ulong ce = unit.ContextEntryAddress(dev.BusNumber, dev.DevFn, alloc: false);
        Assert.NotEqual(0UL, ce);
        ulong bits = VtdFormat.ScalableContextDte | VtdFormat.ScalableContextPre;
        Assert.Equal(bits, f.Platform.Memory.ReadUInt64(ce) & bits);
    }

    public static IommuSva Bind(DriverBed f, PciDevice dev, ProcessAddressSpace mm)
    {
        Assert.Equal(Errno.None, f.Iommu.SvaBindDevice(dev, mm, null, out IommuSva? h));
        return h!;
    }

    public static ulong Pa(ProcessAddressSpace mm, ulong va)
    {
        Assert.True(mm.TryTranslate(va, out ulong pfn));
        return (pfn << 12) | (va & 0xFFF);
    }

    /// <summary>Injects a page request from <paramref name="dev"/> at the unit (the driver's PRQ thread handles it: IopfQueueFlushDev waits for that).</summary>
    public static bool Request(DriverBed f, PciDevice dev, uint? pasid, ulong addr, int prgi, bool lpig, bool rd = true, bool wr = false, bool exe = false, bool pm = false) =>
        f.Unit.PageRequest(dev, new PageRequestMessage(pasid, addr, rd, wr, exe, pm, prgi, lpig));

    /// <summary>q0 of a page group response: PASID 51:32, RID 31:16, RC 15:12, PP 4, type 9.</summary>
    public static ulong ResponseQ0(uint pasid, ushort rid, int rc, bool pp = true) =>
        ((ulong)pasid << 32) | ((ulong)rid << 16) | ((ulong)rc << 12) | (pp ? 0x10UL : 0) | 9;

    /// <summary>q1 of a page group response: PRGI 11:3, LPIG 2.</summary>
    public static ulong ResponseQ1(int prgi, bool lpig = true) => ((ulong)prgi << 3) | (lpig ? 4UL : 0);

    /// <summary>The page group responses among the descriptors since the trace's mark.</summary>
    public static List<(ulong Q0, ulong Q1)> Responses(FirstLevelTestKit.QiTrace trace) =>
        [.. trace.Since().Where(d => d.Type == 9).Select(d => (d.Q0, d.Q1))];
}
