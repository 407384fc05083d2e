using Iommu.Devices;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// iommu_dev_enable_feature(IOPF): 5.15 <c>intel_iommu_dev_enable_feat</c> answers
/// <c>intel_iommu_dev_has_feat(dev, IOPF) ? 0 : -ENODEV</c>, and has_feat is <c>info &amp;&amp; info-&gt;pri_supported</c>:
/// the device's PRI capability is one of five conditions (ECAP.DT and ATS, scalable mode, ECAP.PRS, PRI).
/// </summary>
public sealed class IopfFeatureErrnoTests
{
    public static TheoryData<string, bool, bool> Combinations()
    {
        var d = new TheoryData<string, bool, bool>();
        foreach (string unit in new[] { "Legacy48", "Sm48", "Sm48Dt", "Sm48DtPrs" })
        {
            foreach (bool ats in new[] { false, true })
            {
                foreach (bool pri in new[] { false, true })
                {
                    d.Add(unit, ats, pri);
                }
            }
        }

        return d;
    }

    [Theory]
    [MemberData(nameof(Combinations))]
    public void IopfEnableIsENodevUnlessTheDriverFoundPriSupport(string unit, bool ats, bool pri)
    {
        VtdConfig config = unit switch
        {
            "Legacy48" => VtdConfig.Legacy48Bit,
            "Sm48" => VtdConfig.ScalableMode48Bit,
            "Sm48Dt" => VtdConfig.ScalableMode48Bit with { DeviceTlb = true },
            _ => VtdConfig.ScalableMode48Bit with { DeviceTlb = true, PageRequests = true },
        };
        using var f = new DriverBed(config, memory: DriverTestKit.SmallMemory);
        PciDevice dev = f.Pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { PasidWidth = 20, Ats = ats, Pri = pri, Acs = true });

        // info->pri_supported (dmar_insert_one_dev_info): ATS supported (ECAP.DT and the capability), scalable
        // mode, ECAP.PRS and the PRI capability.
        bool priSupported = config.DeviceTlb && ats && config.ScalableMode && config.PageRequests && pri;
        Errno want = priSupported ? Errno.None : Errno.ENODEV;

        Assert.Equal(want, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Iopf));
    }
}
