using System.Diagnostics.CodeAnalysis;

// RS0027 ("a member with optional parameters should have the most parameters among its public
// overloads") guards against overload-resolution changes when optional parameters are added. The
// ExportImage overloads extend different receiver types (IntelIommu with an optional unit index vs
// VtdUnit with or without probes), so no call can bind to another overload; the shipped API is kept
// as it is rather than reshaped for the analyzer.
[assembly: SuppressMessage("ApiDesign", "RS0027:API with optional parameter(s) should have the most parameters amongst its public overloads",
    Scope = "member", Target = "~M:Iommu.VtD.Diagnostics.VtdImageExporter.ExportImage(Iommu.VtD.Driver.IntelIommu,System.Int32)~Iommu.VtD.Diagnostics.VtdImage",
    Justification = "Overloads extend different receiver types (IntelIommu vs VtdUnit); no call site can change binding.")]
