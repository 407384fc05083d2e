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

    /// <summary>
    /// Which domains get first-level page tables. Default: the 6.x rule,
    /// <see cref="FirstLevelPolicy.FirstLevelByDefault"/> (DMA domains first level, UNMANAGED second level
    /// when both stages exist); <see cref="FirstLevelPolicy.AllWhenEveryUnitHasFlts"/> is 5.15's.
    /// </summary>
    /// <remarks>
    /// The default follows 6.x rather than 5.15: a 5.15 driver on hardware with both stages puts VFIO
    /// domains on first-level tables too, which no later kernel does. Units without ECAP.FLTS behave the
    /// same under both rules.
    /// </remarks>
    public FirstLevelPolicy FirstLevel { get; init; } = FirstLevelPolicy.FirstLevelByDefault;
}
