using System.Diagnostics.CodeAnalysis;

// RS0026 ("do not add multiple overloads with optional parameters") guards against call sites that
// bind to a different overload once a new optional parameter appears. Here the only optional
// parameter is [CallerArgumentExpression] text that the compiler fills in, and the two overloads
// differ by receiver type (Errno vs a kernel-style int), so no call site can change meaning. The
// shipped API is kept as it is rather than reshaped for the analyzer.
[assembly: SuppressMessage("ApiDesign", "RS0026:Do not add multiple public overloads with optional parameters",
    Scope = "member", Target = "~M:Iommu.ErrnoExtensions.ThrowIfError(Iommu.Errno,System.String)",
    Justification = "Optional parameter is compiler-filled [CallerArgumentExpression]; overloads differ by receiver type.")]
[assembly: SuppressMessage("ApiDesign", "RS0026:Do not add multiple public overloads with optional parameters",
    Scope = "member", Target = "~M:Iommu.ErrnoExtensions.ThrowIfError(System.Int32,System.String)",
    Justification = "Optional parameter is compiler-filled [CallerArgumentExpression]; overloads differ by receiver type.")]
