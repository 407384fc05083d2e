using VtdEmulator;

// A small machine embedding the VT-d unit: see docs/embedding-vtd.md.
EmulatorReport report = Machine.Run();
Console.Write(report.Describe());
return report.AllChecksPassed ? 0 : 1;
