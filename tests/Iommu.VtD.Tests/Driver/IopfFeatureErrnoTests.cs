using Iommu.Devices;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// iommu_dev_enable_feature(IOPF) and (SVA) against what 5.15's driver recorded at attach. IOPF: 5.15 <c>intel_iommu_dev_enable_feat</c> answers
/// <c>intel_iommu_dev_has_feat(dev, IOPF) ? 0 : -ENODEV</c>, and has_feat is <c>info &amp;&amp; info-&gt;pri_supported</c>:
/// the device's PRI capability is one of five conditions (ECAP.DT and ATS, scalable mode, ECAP.PRS, PRI).
/// SVA: <c>intel_iommu_enable_sva</c> reads the driver's own <c>info-&gt;pasid_enabled/pri_enabled/ats_enabled</c>,
/// never the device's capability bits another caller may have switched on.
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

    public static TheoryData<string, int, bool, bool, bool> SvaCombinations()
    {
        var d = new TheoryData<string, int, bool, bool, bool>();
        foreach (string unit in new[] { "Sm48DtPrs", "Fl48", "Fl48Dt", "Fl48DtPrs" })
        {
            foreach (int pasidWidth in new[] { 0, 20 })
            {
                foreach (bool ats in new[] { false, true })
                {
                    foreach (bool pri in new[] { false, true })
                    {
                        foreach (bool callerEnables in new[] { false, true })
                        {
                            d.Add(unit, pasidWidth, ats, pri, callerEnables);
                        }
                    }
                }
            }
        }

        return d;
    }

    [Theory]
    [MemberData(nameof(SvaCombinations))]
    public void SvaEnableAnswersWhatTheDriverEnabledAtAttach(string unit, int pasidWidth, bool ats, bool pri, bool callerEnables)
    {
        VtdConfig config = unit switch
        {
            "Sm48DtPrs" => VtdConfig.ScalableMode48Bit with { DeviceTlb = true, PageRequests = true },
            "Fl48" => VtdConfig.ScalableModeFirstLevel48Bit,
            "Fl48Dt" => VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true },
            _ => VtdConfig.ScalableModeFirstLevel48Bit with { DeviceTlb = true, PageRequests = true },
        };
        using var f = new DriverBed(config, memory: DriverTestKit.SmallMemory);
        PciDevice dev = f.Pci.AddDevice(new PciDeviceSpec("0000:00:02.0") { PasidWidth = pasidWidth, Ats = ats, Pri = pri, Acs = true });
        if (callerEnables)
        {
            // Someone other than the driver switches the capabilities on (EBUSY where the driver already did).
            _ = dev.EnableAts();
            _ = dev.EnablePri();
        }

        // intel_iommu_enable_sva: VTD_FLAG_SVM_CAPABLE (scalable mode with PASID, CAP.FL1GP for the CPU's 1 GiB
        // pages), then intel_iommu_enable_pasid (-ENODEV without info->pasid_supported), then the driver's
        // pasid/pri/ats_enabled, which its attach set from ats_supported (ECAP.DT and ATS) and pri_supported
        // (that, ECAP.PRS and PRI).
        bool svmCapable = config.ScalableMode && config.FirstLevel1GiBPages;
        bool atsSupported = config.DeviceTlb && ats;
        bool priSupported = atsSupported && config.PageRequests && pri;
        Errno want = !svmCapable || pasidWidth == 0 ? Errno.ENODEV
            : !(atsSupported && priSupported) ? Errno.EINVAL
            : Errno.None;

        Assert.Equal(want, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Sva));
        // 5.15's dev_feat_enabled answers false for SVA either way; what shows is the iopf queue: a second enable
        // finds the device on it (-EBUSY), and a disable takes it off, or finds it absent after a failure (-EINVAL).
        if (want == Errno.None)
        {
            Assert.Equal(Errno.EBUSY, f.Iommu.DevEnableFeature(dev, IommuDevFeature.Sva));
            Assert.Equal(Errno.None, f.Iommu.DevDisableFeature(dev, IommuDevFeature.Sva));
        }
        else
        {
            Assert.Equal(Errno.EINVAL, f.Iommu.DevDisableFeature(dev, IommuDevFeature.Sva));
        }
    }
}
