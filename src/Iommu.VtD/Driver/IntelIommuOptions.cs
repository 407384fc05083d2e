using System.Globalization;
using System.Text;
using Iommu.VtD.Hardware;

namespace Iommu.VtD.Driver;

/// <summary>Kernel command-line style options of the driver (<c>intel_iommu=</c>).</summary>
public sealed record IntelIommuOptions
{
    /// <summary>
    /// Use scalable mode where the hardware supports it (<c>intel_iommu=sm_on</c>). Default on: the
    /// point of this model is PASID-granular aux domains. (5.15's Kconfig default is off.)
    /// </summary>
    public bool ScalableMode { get; init; } = true;

    /// <summary>Use second-level superpages (<c>intel_iommu=sp_off</c> turns them off). Default on.</summary>
    public bool Superpages { get; init; } = true;
}
