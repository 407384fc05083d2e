using Iommu.Devices;

namespace Iommu.VtD.Driver;

/// <summary>
/// Per-device driver state (<c>struct device_domain_info</c>, <c>dev_iommu_priv</c>): the unit, the
/// RID domain, PASID support, whether auxiliary domains are enabled, and the PASID table.
/// </summary>
[KernelSymbol("struct device_domain_info")]
internal sealed class DeviceDomainInfo
{
    public DeviceDomainInfo(PciDevice device, IntelIommuUnit unit, DmarDomain domain)
    {
        Device = device;
        Unit = unit;
        Domain = domain;
    }

    public PciDevice Device { get; }

    public IntelIommuUnit Unit { get; }

    public DmarDomain Domain { get; }

    public byte Bus => Device.BusNumber;

    public byte DevFn => Device.DevFn;

    /// <summary><c>pasid_supported</c>: scalable mode with PASID on the unit and a PASID capability on the device.</summary>
    public bool PasidSupported { get; init; }

    public bool PasidEnabled { get; set; }

    /// <summary><c>ats_supported</c>: ECAP.DT, an ATS capability and an ATSR covering the device (set at probe).</summary>
    public bool AtsSupported { get; init; }

    /// <summary><c>pri_supported</c>: <see cref="AtsSupported"/>, scalable mode, ECAP.PRS and a PRI capability.</summary>
    public bool PriSupported { get; init; }

    /// <summary><c>ats_enabled</c>: the driver enabled ATS on the device (<c>iommu_enable_dev_iotlb</c>).</summary>
    public bool AtsEnabled { get; set; }

    /// <summary><c>pri_enabled</c>.</summary>
    public bool PriEnabled { get; set; }

    /// <summary><c>ats_qdep</c>: the device's ATS invalidate queue depth, read when ATS is enabled.</summary>
    public int AtsQdep { get; set; }

    /// <summary><c>pfsid</c>: the physical function's source ID with ECAP.DIT, else 0.</summary>
    public ushort Pfsid { get; set; }

    /// <summary>The device's source ID (<c>PCI_DEVID(bus, devfn)</c>).</summary>
    public ushort Sid => (ushort)((Bus << 8) | DevFn);

    /// <summary><c>auxd_enabled</c>.</summary>
    public bool AuxdEnabled { get; set; }

    /// <summary>The PASID directory (scalable mode), or 0.</summary>
    public ulong PasidDirectory { get; set; }

    /// <summary>Frames in the PASID directory.</summary>
    public int PasidDirectoryPages { get; set; }

    /// <summary><c>pasid_table->max_pasid</c>.</summary>
    public uint MaxPasid { get; set; }
}
